"""Evaluators: the instance and video (YouTube-VIS) evaluators of upstream, and the choice of evaluators
per dataset and recipe."""
from .build import EVALUATOR_BUILDERS, build_evaluator
from .instance_evaluation import InstanceSegEvaluator
from .ytvis_evaluation import YTVISEvaluator

__all__ = ["EVALUATOR_BUILDERS", "InstanceSegEvaluator", "YTVISEvaluator", "build_evaluator"]
