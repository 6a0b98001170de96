"""Multi-scale and flip test-time augmentation of semantic segmentation."""
import copy
from typing import Dict, List, Optional

import torch
from detectron2.data.detection_utils import read_image
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling import DatasetMapperTTA
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["SemanticSegmentorWithTTA"]


class SemanticSegmentorWithTTA(nn.Module):
    """
    A semantic segmentation model with test-time augmentation: each image is resized to every
    short side of ``TEST.AUG.MIN_SIZES`` (longest side at most ``TEST.AUG.MAX_SIZE``), also
    flipped horizontally if ``TEST.AUG.FLIP``, and the model's ``sem_seg`` outputs (scores
    ``[K, height, width]`` at the original resolution) are averaged. Called like the model, with a
    list of input dicts (``image`` ``[C, H, W]``, ``height``, ``width``), it returns a list of
    ``{"sem_seg": Tensor [K, height, width]}``.
    """

    def __init__(self, cfg, model: nn.Module, tta_mapper: Optional[DatasetMapperTTA] = None):
        """
        Args:
            cfg: the model's config (reads ``TEST.AUG`` and ``INPUT.FORMAT``).
            model: a MaskFormer model with ``MODEL.MASK_FORMER.TEST.SEMANTIC_ON``.
            tta_mapper: the augmentations; default ``DatasetMapperTTA(cfg)``.
        """
        super().__init__()
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self.cfg = cfg.clone()
        self.model = model
        self.tta_mapper = tta_mapper or DatasetMapperTTA(cfg)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        return [self._inference_one_image(self._with_image(x)) for x in batched_inputs]

    def _with_image(self, dataset_dict: Dict) -> Dict:
        """The input dict, with ``image``, ``height`` and ``width`` read from ``file_name`` if missing."""
        if "image" in dataset_dict:
            return dataset_dict
        dataset_dict = copy.copy(dataset_dict)
        image = read_image(dataset_dict["file_name"], self.cfg.INPUT.FORMAT)
        dataset_dict["image"] = torch.from_numpy(image.transpose(2, 0, 1).copy())
        dataset_dict.setdefault("height", image.shape[0])
        dataset_dict.setdefault("width", image.shape[1])
        return dataset_dict

    @torch.no_grad()
    def _inference_one_image(self, dataset_dict: Dict) -> Dict[str, torch.Tensor]:
        total = None
        augmented = self.tta_mapper(dataset_dict)
        for augmented_input in augmented:
            transforms = augmented_input.pop("transforms")
            sem_seg = self.model([augmented_input])[0]["sem_seg"]
            if any(isinstance(t, HFlipTransform) for t in transforms.transforms):
                sem_seg = sem_seg.flip(dims=[2])
            total = sem_seg if total is None else total + sem_seg
        return {"sem_seg": total / len(augmented)}
