"""Choosing the evaluators of a dataset from its metadata's ``evaluator_type``, with the rules of
the config's recipe (:func:`mask_former.modeling.recipe.build_recipe`, its ``evaluator_family``):
upstream MaskFormer (v1) and Mask2Former evaluate the same datasets differently."""
import importlib.util
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
    LVISEvaluator,
    SemSegEvaluator,
)

from ..modeling.recipe import build_recipe
from .instance_evaluation import InstanceSegEvaluator
from .ytvis_evaluation import YTVISEvaluator

__all__ = ["EVALUATOR_BUILDERS", "MASK2FORMER_EVALUATORS", "MASKFORMER_EVALUATORS", "build_evaluator"]

EvaluatorBuilder = Callable[..., Optional[DatasetEvaluator]]
"""``builder(cfg, dataset_name, output_dir)`` -> an evaluator, or None where it does not apply."""

# Mask classification predicts no boxes (Mask2Former fills them with zeros): upstream's
# COCOEvaluator/LVISEvaluator, given no tasks, would also report a meaningless box AP.
_MASK_AP_TASKS = ("segm",)


def _only_if(output: str, build: EvaluatorBuilder) -> EvaluatorBuilder:
    """``build``, or None where ``MODEL.MASK_FORMER.TEST.<output>`` turns that output off (the model
    then has nothing for the evaluator)."""

    def build_if_on(cfg, dataset_name: str, output_dir: str) -> Optional[DatasetEvaluator]:
        return build(cfg, dataset_name, output_dir) if cfg.MODEL.MASK_FORMER.TEST[output] else None

    return build_if_on


def _with_metadata(key: str, what: str, output: str, metric: str) -> Callable[[EvaluatorBuilder], EvaluatorBuilder]:
    """A wrapper of builders: ``build``, or None with a warning where the dataset's metadata has no
    ``key`` (the ``what`` that ``metric`` is computed against), e.g. Mapillary Vistas panoptic has
    no COCO instance json, a panoptic dataset of your own may have no semantic labels."""

    def wrap(build: EvaluatorBuilder) -> EvaluatorBuilder:
        def build_if_annotated(cfg, dataset_name: str, output_dir: str) -> Optional[DatasetEvaluator]:
            if MetadataCatalog.get(dataset_name).get(key) is None:
                logging.getLogger(__name__).warning(
                    f"MODEL.MASK_FORMER.TEST.{output} is set but dataset {dataset_name!r} has no {key} "
                    f"({what}) in its metadata: {metric} is not evaluated"
                )
                return None
            return build(cfg, dataset_name, output_dir)

        return build_if_annotated

    return wrap


_with_instances_json = _with_metadata("json_file", "COCO instance annotations", "INSTANCE_ON", "mask AP")
_with_semantic_labels = _with_metadata("sem_seg_root", "semantic labels", "SEMANTIC_ON", "mIoU")


def _semantic(cfg, dataset_name: str, output_dir: str) -> SemSegEvaluator:
    return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir)


def _panoptic(cfg, dataset_name: str, output_dir: str) -> COCOPanopticEvaluator:
    return COCOPanopticEvaluator(dataset_name, output_dir)


def _coco_instance(cfg, dataset_name: str, output_dir: str) -> COCOEvaluator:
    return COCOEvaluator(dataset_name, tasks=_MASK_AP_TASKS, output_dir=output_dir, use_fast_impl=False)


def _panoptic_instance(cfg, dataset_name: str, output_dir: str) -> InstanceSegEvaluator:
    return InstanceSegEvaluator(dataset_name, output_dir=output_dir)


def _lvis_instance(cfg, dataset_name: str, output_dir: str) -> LVISEvaluator:
    if importlib.util.find_spec("lvis") is None:
        raise ImportError(
            f"Evaluating dataset {dataset_name!r} (evaluator_type 'lvis') needs the lvis package: "
            "pip install lvis"
        )
    return LVISEvaluator(dataset_name, tasks=_MASK_AP_TASKS, output_dir=output_dir)


def _ytvis(cfg, dataset_name: str, output_dir: str) -> YTVISEvaluator:
    return YTVISEvaluator(dataset_name, output_dir=output_dir)


def _cityscapes_semantic(cfg, dataset_name: str, output_dir: str) -> CityscapesSemSegEvaluator:
    return CityscapesSemSegEvaluator(dataset_name)


def _cityscapes_instance(cfg, dataset_name: str, output_dir: str) -> CityscapesInstanceEvaluator:
    return CityscapesInstanceEvaluator(dataset_name)


_PANOPTIC_IF_ON = _only_if("PANOPTIC_ON", _panoptic)
_COCO_INSTANCE_IF_ON = _only_if("INSTANCE_ON", _with_instances_json(_coco_instance))
_PANOPTIC_INSTANCE_IF_ON = _only_if("INSTANCE_ON", _with_instances_json(_panoptic_instance))
_CITYSCAPES_SEMANTIC_IF_ON = _only_if("SEMANTIC_ON", _cityscapes_semantic)
# Panoptic datasets carry semantic labels in upstream's registrations, not always in one's own.
_PANOPTIC_SEMANTIC_IF_ON = _only_if("SEMANTIC_ON", _with_semantic_labels(_semantic))

EvaluatorTable = Dict[str, Tuple[EvaluatorBuilder, ...]]

MASKFORMER_EVALUATORS: EvaluatorTable = {
    "sem_seg": (_semantic,),
    "coco": (_coco_instance,),
    # COCO panoptic has no semantic labels (coco_2017_val_panoptic): PQ only.
    "coco_panoptic_seg": (_PANOPTIC_IF_ON,),
    "ade20k_panoptic_seg": (_PANOPTIC_SEMANTIC_IF_ON, _PANOPTIC_IF_ON),
    # Not in v1; evaluated like ADE20K panoptic, the other panoptic dataset with semantic labels.
    "mapillary_vistas_panoptic_seg": (_PANOPTIC_SEMANTIC_IF_ON, _PANOPTIC_IF_ON),
    "cityscapes_sem_seg": (_cityscapes_semantic,),
    "cityscapes_instance": (_cityscapes_instance,),
    "cityscapes_panoptic_seg": (_PANOPTIC_IF_ON, _CITYSCAPES_SEMANTIC_IF_ON),
}
"""MaskFormer (v1): ``evaluator_type`` -> the builders of its evaluators (v1 never evaluates instances
of a panoptic dataset)."""

MASK2FORMER_EVALUATORS: EvaluatorTable = {
    "sem_seg": (_semantic,),
    "coco": (_coco_instance,),
    "coco_panoptic_seg": (_PANOPTIC_IF_ON, _COCO_INSTANCE_IF_ON, _PANOPTIC_SEMANTIC_IF_ON),
    "ade20k_panoptic_seg": (_PANOPTIC_SEMANTIC_IF_ON, _PANOPTIC_IF_ON, _PANOPTIC_INSTANCE_IF_ON),
    "mapillary_vistas_panoptic_seg": (_PANOPTIC_IF_ON, _PANOPTIC_INSTANCE_IF_ON, _PANOPTIC_SEMANTIC_IF_ON),
    "cityscapes_sem_seg": (_cityscapes_semantic,),
    "cityscapes_instance": (_cityscapes_instance,),
    "cityscapes_panoptic_seg": (
        _PANOPTIC_IF_ON,
        _CITYSCAPES_SEMANTIC_IF_ON,
        _only_if("INSTANCE_ON", _cityscapes_instance),
    ),
    "lvis": (_lvis_instance,),
    # Video instance segmentation (Mask2Former's video project).
    "ytvis": (_ytvis,),
}
"""Mask2Former: ``evaluator_type`` -> the builders of its evaluators."""

EVALUATOR_BUILDERS: Dict[str, EvaluatorTable] = {
    "maskformer": MASKFORMER_EVALUATORS,
    "mask2former": MASK2FORMER_EVALUATORS,
}
"""A recipe's ``evaluator_family`` -> its evaluator table."""


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluator:
    """
    The evaluators of ``dataset_name``, as upstream builds them for the config's recipe
    (:func:`~mask_former.modeling.recipe.build_recipe`): chosen by the dataset metadata's ``evaluator_type``
    and by the inference
    outputs the config turns on (``MODEL.MASK_FORMER.TEST.{SEMANTIC,PANOPTIC,INSTANCE}_ON``).

    Args:
        cfg: the config of the evaluated model.
        dataset_name: a registered dataset.
        output_dir: where evaluators write their files; default ``OUTPUT_DIR/inference``.

    Raises:
        NotImplementedError: the family has no evaluator for the dataset's ``evaluator_type``, or
            none applies (detectron2's ``DefaultTrainer.test`` then skips the dataset with a warning).
        ImportError: the evaluator needs a package that is not installed (LVIS: ``lvis``).
    """
    output_dir = output_dir or os.path.join(cfg.OUTPUT_DIR, "inference")
    family = build_recipe(cfg).evaluator_family
    table = EVALUATOR_BUILDERS[family]
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type not in table:
        raise NotImplementedError(
            f"No {family} evaluator for dataset {dataset_name!r} of evaluator_type {evaluator_type!r}; "
            f"known types: {sorted(table)}"
        )
    evaluators: List[DatasetEvaluator] = [
        evaluator for build in table[evaluator_type] if (evaluator := build(cfg, dataset_name, output_dir)) is not None
    ]
    if not evaluators:
        raise NotImplementedError(
            f"No evaluator applies to dataset {dataset_name!r} ({evaluator_type}) with the inference "
            "outputs turned on in MODEL.MASK_FORMER.TEST"
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
