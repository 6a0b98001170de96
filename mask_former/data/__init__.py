"""Datasets (registered at import), dataset mappers and the built-in demo dataset."""
from . import datasets
