"""Datasets (registered at import), dataset mappers and the built-in demo datasets (images, videos)."""
from . import dataset_mappers, datasets, demo_dataset, demo_video_dataset
from .dataset_mappers import DATASET_MAPPER_REGISTRY, build_dataset_mapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "build_dataset_mapper",
    "dataset_mappers",
    "datasets",
    "demo_dataset",
    "demo_video_dataset",
]
