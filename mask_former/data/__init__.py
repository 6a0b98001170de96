"""Datasets (registered at import), dataset mappers and the built-in demo dataset."""
from . import dataset_mappers, datasets, demo_dataset
from .dataset_mappers import DATASET_MAPPER_REGISTRY, build_dataset_mapper

__all__ = ["DATASET_MAPPER_REGISTRY", "build_dataset_mapper", "dataset_mappers", "datasets", "demo_dataset"]
