"""The registry of training dataset mappers and the builders of a config's training and test mappers."""
from typing import Any, Callable, Dict, Optional, Sequence, TypeVar

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.utils.registry import Registry

from ...compat import register_under_name

_Registered = TypeVar("_Registered")


class _NamedRegistry(Registry):
    """A :class:`Registry` whose objects are registered under a name of the caller's choice (the
    upstream config value, such as ``"mask_former_semantic"``) instead of their ``__name__``."""

    def register_as(self, name: str) -> Callable[[_Registered], _Registered]:
        """Decorator registering a class or function under ``name``."""

        def deco(obj: _Registered) -> _Registered:
            register_under_name(self, name, obj)
            return obj

        return deco


DATASET_MAPPER_REGISTRY = _NamedRegistry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Training dataset mappers, named by ``cfg.INPUT.DATASET_MAPPER_NAME`` (the upstream Mask2Former
names: ``mask_former_semantic``, ``mask_former_panoptic``, ``mask_former_instance``,
``coco_instance_lsj``, ``coco_panoptic_lsj``) and MaskFormer v1's ``detr_panoptic``.

Called as ``Mapper(cfg, is_train=True)``. The mapper is a callable taking one dataset dict in
detectron2's format (a copy is made; the input is not modified) and returning the model's input
dict: ``image`` (uint8 ``[3, H, W]`` in ``cfg.INPUT.FORMAT``) and ``instances`` (``Instances`` with
``gt_classes`` int64 ``[N]`` and ``gt_masks`` bool ``[N, H, W]``), plus ``sem_seg`` (int64
``[H, W]``) where the mapper produces one. The mappers are for training only, as upstream:
evaluation reads images with detectron2's ``DatasetMapper``.

The video mapper ``ytvis`` (:class:`YTVISDatasetMapper`) maps a video's dict to a clip instead:
lists of frames and of per-frame ``Instances``; it also builds inference clips (``is_train=False``).
"""


CLIP_MAPPERS: Dict[str, str] = {"ytvis": "ytvis"}
"""``evaluator_type`` of the video datasets -> the registered mapper that reads their videos as clips, in
training and at test time (``is_train=False``), whatever ``INPUT.DATASET_MAPPER_NAME`` says: upstream's video
configs do not set it. The datasets of other types are read by ``INPUT.DATASET_MAPPER_NAME`` in training and
by detectron2's ``DatasetMapper`` at test time."""


def clip_mapper_name(dataset_names: Sequence[str]) -> Optional[str]:
    """The clip mapper that reads these datasets (:data:`CLIP_MAPPERS`), or None for image datasets.

    Raises:
        ValueError: the datasets mix video and image datasets, or videos needing different mappers.
    """
    types = {name: MetadataCatalog.get(name).get("evaluator_type") for name in dataset_names}
    mappers = {CLIP_MAPPERS.get(evaluator_type) for evaluator_type in types.values()}
    if len(mappers) > 1:
        raise ValueError(
            f"The datasets {list(dataset_names)} cannot be read by one mapper: their evaluator types are {types} "
            f"(video datasets are read by the clip mappers {CLIP_MAPPERS}, the others by INPUT.DATASET_MAPPER_NAME)"
        )
    return mappers.pop() if mappers else None


def build_train_mapper(cfg: CfgNode) -> Callable:
    """The training mapper of ``DATASETS.TRAIN``: its clip mapper for video datasets (:data:`CLIP_MAPPERS`),
    else the one named by ``INPUT.DATASET_MAPPER_NAME``."""
    return build_dataset_mapper(cfg, is_train=True, name=clip_mapper_name(cfg.DATASETS.TRAIN))


def build_test_mapper(cfg: CfgNode, dataset_name: str) -> Optional[Callable]:
    """The test mapper of ``dataset_name``: its clip mapper (``is_train=False``: every frame, no targets) for
    a video dataset, None for an image dataset (detectron2's test loader then uses its ``DatasetMapper``)."""
    name = clip_mapper_name([dataset_name])
    return None if name is None else build_dataset_mapper(cfg, is_train=False, name=name)


def build_dataset_mapper(
    cfg: CfgNode, is_train: bool = True, name: Optional[str] = None
) -> Callable[[Dict[str, Any]], Dict[str, Any]]:
    """Build the dataset mapper named ``name``, by default ``cfg.INPUT.DATASET_MAPPER_NAME``.

    Args:
        cfg: a config with the MaskFormer keys (see ``add_maskformer2_config``).
        is_train: passed to the mapper; the image mappers accept only True.
        name: a registered mapper's name; None reads ``cfg.INPUT.DATASET_MAPPER_NAME``.

    Returns:
        A callable mapping one dataset dict to the model's input dict.
    """
    name = name or cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPER_REGISTRY:
        known = ", ".join(sorted(registered for registered, _ in DATASET_MAPPER_REGISTRY))
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME={name!r} is not a registered dataset mapper. "
            f"Known names: {known}."
        )
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, is_train=is_train)
