"""Evaluators: the instance evaluator of upstream, and the choice of evaluators per dataset and recipe."""
from .build import EVALUATOR_BUILDERS, build_evaluator
from .instance_evaluation import InstanceSegEvaluator

__all__ = ["EVALUATOR_BUILDERS", "InstanceSegEvaluator", "build_evaluator"]
