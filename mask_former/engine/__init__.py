"""Training and evaluation: the trainer and its pieces, the launcher, test-time augmentation."""
from ..evaluation import EVALUATOR_BUILDERS, build_evaluator
from .launch import launch
from .optimizer import build_optimizer, get_param_groups
from .rng import derive_seed, isolated_rngs, seed_rngs
from .train_loader import IterationBatchSampler, IterationDataLoader, SeededMapDataset, build_train_loader
from .trainer import Trainer, build_step_trainer, training_seed
from .tta import SemanticSegmentorWithTTA

__all__ = [
    "EVALUATOR_BUILDERS",
    "IterationBatchSampler",
    "IterationDataLoader",
    "SeededMapDataset",
    "SemanticSegmentorWithTTA",
    "Trainer",
    "build_evaluator",
    "build_optimizer",
    "build_step_trainer",
    "build_train_loader",
    "derive_seed",
    "get_param_groups",
    "isolated_rngs",
    "launch",
    "seed_rngs",
    "training_seed",
]
