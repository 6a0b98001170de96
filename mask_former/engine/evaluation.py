"""Choosing the evaluators of a dataset from its metadata's ``evaluator_type``."""
import logging
import os
from typing import Callable, Dict, List, Optional, Tuple

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from ..evaluation import InstanceSegEvaluator

__all__ = ["EVALUATOR_BUILDERS", "build_evaluator"]

EvaluatorBuilder = Callable[..., Optional[DatasetEvaluator]]
"""``builder(cfg, dataset_name, output_dir)`` -> an evaluator, or None where it does not apply."""


def _only_if(output: str, build: EvaluatorBuilder) -> EvaluatorBuilder:
    """``build``, or None where ``MODEL.MASK_FORMER.TEST.<output>`` turns that output off."""

    def build_if_on(cfg, dataset_name: str, output_dir: str) -> Optional[DatasetEvaluator]:
        return build(cfg, dataset_name, output_dir) if cfg.MODEL.MASK_FORMER.TEST[output] else None

    return build_if_on


def _semantic(cfg, dataset_name: str, output_dir: str) -> SemSegEvaluator:
    return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir)


def _panoptic(cfg, dataset_name: str, output_dir: str) -> COCOPanopticEvaluator:
    return COCOPanopticEvaluator(dataset_name, output_dir)


def _coco_instance(cfg, dataset_name: str, output_dir: str) -> COCOEvaluator:
    # Mask classification predicts no boxes: only mask AP is meaningful.
    return COCOEvaluator(dataset_name, tasks=("segm",), output_dir=output_dir, use_fast_impl=False)


def _panoptic_semantic(cfg, dataset_name: str, output_dir: str) -> Optional[SemSegEvaluator]:
    if not MetadataCatalog.get(dataset_name).get("sem_seg_root"):
        logging.getLogger(__name__).warning(
            f"MODEL.MASK_FORMER.TEST.SEMANTIC_ON is set but dataset {dataset_name!r} has no sem_seg_root "
            "(semantic labels) in its metadata: mIoU is not evaluated"
        )
        return None
    return _semantic(cfg, dataset_name, output_dir)


def _panoptic_instance(cfg, dataset_name: str, output_dir: str) -> Optional[InstanceSegEvaluator]:
    if not MetadataCatalog.get(dataset_name).get("json_file"):
        logging.getLogger(__name__).warning(
            f"MODEL.MASK_FORMER.TEST.INSTANCE_ON is set but dataset {dataset_name!r} has no json_file "
            "(COCO instance annotations) in its metadata: mask AP is not evaluated"
        )
        return None
    return InstanceSegEvaluator(dataset_name, output_dir=output_dir)


def _cityscapes_semantic(cfg, dataset_name: str, output_dir: str) -> CityscapesSemSegEvaluator:
    return CityscapesSemSegEvaluator(dataset_name)


def _cityscapes_instance(cfg, dataset_name: str, output_dir: str) -> CityscapesInstanceEvaluator:
    return CityscapesInstanceEvaluator(dataset_name)


_PANOPTIC = (
    _only_if("PANOPTIC_ON", _panoptic),
    _only_if("SEMANTIC_ON", _panoptic_semantic),
    _only_if("INSTANCE_ON", _panoptic_instance),
)

EVALUATOR_BUILDERS: Dict[str, Tuple[EvaluatorBuilder, ...]] = {
    "sem_seg": (_semantic,),
    "coco": (_coco_instance,),
    "coco_panoptic_seg": _PANOPTIC,
    "ade20k_panoptic_seg": _PANOPTIC,
    "mapillary_vistas_panoptic_seg": _PANOPTIC,
    "cityscapes_sem_seg": (_cityscapes_semantic,),
    "cityscapes_instance": (_cityscapes_instance,),
    "cityscapes_panoptic_seg": (
        _only_if("PANOPTIC_ON", _panoptic),
        _only_if("SEMANTIC_ON", _cityscapes_semantic),
        _only_if("INSTANCE_ON", _cityscapes_instance),
    ),
}
"""``evaluator_type`` of a dataset's metadata -> the builders of its evaluators."""


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluator:
    """
    The evaluators of ``dataset_name``, chosen by its metadata's ``evaluator_type`` and by the
    inference outputs the config turns on (``MODEL.MASK_FORMER.TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON``).

    Args:
        cfg: the config of the evaluated model.
        dataset_name: a registered dataset.
        output_dir: where evaluators write their files; default ``OUTPUT_DIR/inference``.

    Raises:
        NotImplementedError: the dataset's ``evaluator_type`` is unknown, or no evaluator applies
            (detectron2's ``DefaultTrainer.test`` then skips the dataset with a warning).
    """
    output_dir = output_dir or os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type not in EVALUATOR_BUILDERS:
        raise NotImplementedError(
            f"No evaluator for dataset {dataset_name!r} of evaluator_type {evaluator_type!r}; "
            f"known types: {sorted(EVALUATOR_BUILDERS)}"
        )
    evaluators: List[DatasetEvaluator] = [
        evaluator
        for build in EVALUATOR_BUILDERS[evaluator_type]
        if (evaluator := build(cfg, dataset_name, output_dir)) is not None
    ]
    if not evaluators:
        raise NotImplementedError(
            f"No evaluator applies to dataset {dataset_name!r} ({evaluator_type}) with the inference "
            "outputs turned on in MODEL.MASK_FORMER.TEST"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
