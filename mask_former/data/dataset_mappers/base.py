"""The base of the training dataset mappers: the record's copy, image reading, augmentation, padding and the
targets' assembly that every mapper shares."""
import copy
import logging
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances

from .padding import IMAGE_PAD_VALUE, check_padding, image_to_tensor, pad_to_divisibility
from .reading import read_dataset_image
from .targets import masks_to_instances

__all__ = ["BaseDatasetMapper", "require_training"]


def require_training(mapper_name: str, is_train: bool) -> None:
    """Raise unless ``is_train``: the MaskFormer mappers build training targets only."""
    if not is_train:
        raise ValueError(
            f"{mapper_name} is a training mapper (is_train=False given); evaluation reads images "
            "with detectron2's DatasetMapper, as upstream Mask2Former's train_net.py does."
        )


class BaseDatasetMapper:
    """What the training mappers share. Called with one dataset dict (not modified), a mapper deep-copies it,
    reads its image and hands both to :meth:`map_record`, which subclasses implement with the per-image steps
    below (:meth:`read_image`, :meth:`augment`, :meth:`image_tensor`, :meth:`label_tensor`, :meth:`targets`);
    a clip mapper can run the same steps on each frame. Subclasses name their augmentations in
    :meth:`build_augmentations`.

    Constructed as ``Mapper(cfg, is_train=True)`` (see :meth:`from_config`) or with the keyword arguments.
    """

    # Whether from_config reads INPUT.SIZE_DIVISIBILITY and INPUT.SIZE_DIVISIBILITY_PADDING: the mask_former_*
    # mappers pad to it, as upstream; the others leave padding to the model or crop to a fixed size.
    pads_to_size_divisibility: ClassVar[bool] = False

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[Union[T.Augmentation, T.Transform]],
        image_format: str,
        num_classes: int,
        size_divisibility: int = -1,
        padding: str = "fixed",
        drop_empty_targets: bool = False,
    ):
        """
        Args:
            is_train: must be True (training only, as upstream).
            augmentations: applied to the image and its labels.
            image_format: format of ``image``, as in ``detection_utils.read_image``.
            num_classes: number of classes; class ids outside ``[0, num_classes)`` are an error.
            size_divisibility: pad the image and labels to this size (<= 0: no padding).
            padding: "fixed" or "multiple", as in :func:`pad_to_divisibility`.
            drop_empty_targets: drop the targets whose mask is empty after augmentation.
        """
        require_training(type(self).__name__, is_train)
        check_padding(padding)
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.num_classes = num_classes
        self.size_divisibility = size_divisibility
        self.padding = padding
        self.drop_empty_targets = drop_empty_targets
        logging.getLogger(__name__).info(f"[{type(self).__name__}] Augmentations used in training: {augmentations}")

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = True) -> Dict[str, Any]:
        options = {
            "is_train": is_train,
            "augmentations": cls.build_augmentations(cfg),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "drop_empty_targets": cfg.INPUT.DROP_EMPTY_TARGETS,
        }
        if cls.pads_to_size_divisibility:
            options["size_divisibility"] = cfg.INPUT.SIZE_DIVISIBILITY
            options["padding"] = cfg.INPUT.SIZE_DIVISIBILITY_PADDING
        return options

    @classmethod
    def build_augmentations(cls, cfg: CfgNode) -> List[T.Augmentation]:
        """The mapper's training augmentations, from the config."""
        raise NotImplementedError

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        """
        Args:
            dataset_dict: one image's dict in detectron2's format (not modified).

        Returns:
            the model's input, described in the class docstring.
        """
        record = copy.deepcopy(dataset_dict)
        return self.map_record(record, self.read_image(record))

    def map_record(self, record: Dict[str, Any], image: np.ndarray) -> Dict[str, Any]:
        """Augment ``image`` and read, check and augment its labels; return ``record`` with the outputs.

        Args:
            record: a copy of the dataset dict, to fill in.
            image: uint8 ``[H, W, 3]``, the record's image in ``image_format``.
        """
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The class name, for errors."""
        return type(self).__name__

    def read_image(self, record: Dict[str, Any]) -> np.ndarray:
        """``record["file_name"]``, uint8 ``[H, W, 3]`` in ``image_format``, checked against the record's
        ``height`` and ``width``; errors name the file."""
        return read_dataset_image(record, self.image_format)

    def augment(
        self, image: np.ndarray, sem_seg: Optional[np.ndarray] = None
    ) -> Tuple[T.AugInput, T.TransformList]:
        """Draw the augmentations for ``image`` (and ``sem_seg``, ``[H, W]``, which the category-area crop
        looks at) and apply them.

        Returns:
            the augmented input (``image``, ``sem_seg``) and the transforms, to apply to other labels.
        """
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        return aug_input, transforms

    def pad(self, tensor: torch.Tensor, value: Union[int, bool]) -> torch.Tensor:
        """``[..., H, W]`` padded to ``size_divisibility`` with ``value`` (unchanged where it is <= 0)."""
        return pad_to_divisibility(tensor, self.size_divisibility, value, self.padding)

    def image_tensor(self, image: np.ndarray) -> torch.Tensor:
        """An augmented ``[H, W, 3]`` image as the padded uint8 ``[3, H', W']`` tensor of the output."""
        return self.pad(image_to_tensor(image), IMAGE_PAD_VALUE)

    def label_tensor(self, labels: np.ndarray, value: int) -> torch.Tensor:
        """An augmented ``[H, W]`` label map as a padded int64 ``[H', W']`` tensor, padded with ``value``."""
        return self.pad(torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)), value)

    def targets(
        self,
        image_size: Tuple[int, int],
        classes: torch.Tensor,
        masks: torch.Tensor,
        boxes: Optional[Boxes] = None,
    ) -> Instances:
        """The output ``instances`` (see :func:`masks_to_instances`), less the empty ones where
        ``drop_empty_targets``."""
        return masks_to_instances(image_size, classes, masks, boxes, self.drop_empty_targets)
