from .instance_evaluation import InstanceSegEvaluator

__all__ = ["InstanceSegEvaluator"]
