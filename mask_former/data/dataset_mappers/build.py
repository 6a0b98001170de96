"""The registry of training dataset mappers and its builder."""
from typing import Any, Callable, Dict, TypeVar

from detectron2.config import CfgNode
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


def build_dataset_mapper(cfg: CfgNode, is_train: bool = True) -> Callable[[Dict[str, Any]], Dict[str, Any]]:
    """Build the dataset mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME``.

    Args:
        cfg: a config with the MaskFormer keys (see ``add_maskformer2_config``).
        is_train: passed to the mapper; the registered mappers accept only True.

    Returns:
        A callable mapping one dataset dict to the model's input dict.
    """
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in DATASET_MAPPER_REGISTRY:
        known = ", ".join(sorted(registered for registered, _ in DATASET_MAPPER_REGISTRY))
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME={name!r} is not a registered dataset mapper. "
            f"Known names: {known}."
        )
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, is_train=is_train)
