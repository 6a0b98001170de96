"""``MaskFormer``: the meta-architecture of MaskFormer and Mask2Former."""
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.backbone import Backbone
from detectron2.structures import BitMasks, ImageList
from torch import Tensor, nn
from torch.nn import functional as F

from ..fast_paths.frozen_bn import fold_frozen_batch_norm
from ..fast_paths.row_bands import row_band_inference, uses_row_bands
from ..padding import padded_size
from ..postprocessing import InferenceTasks, full_size_inference, resize_to_output
from ..precision import autocast_dtype, run_autocast
from ..recipe import RECIPES, Recipe, build_recipe

# resize_to_output lived here before it moved to postprocessing: its import path stays.
__all__ = ["MaskFormer", "resize_to_output"]


@META_ARCH_REGISTRY.register()
class MaskFormer(nn.Module):
    """Mask classification for semantic, panoptic and instance segmentation.

    ``forward(batched_inputs)`` takes a list of dicts, one per image, with ``image`` (``[C, H, W]``
    in ``INPUT.FORMAT``), optionally ``height``/``width`` (output size) and, in training,
    ``instances`` with ``gt_classes [N]`` and ``gt_masks [N, H, W]``. Training returns a dict of
    weighted losses; inference returns, per image, ``sem_seg [K, height, width]``, ``panoptic_seg``
    ``(ids [height, width], segments_info)`` and ``instances``, as switched on in the config.

    ``recipe`` holds the rules of the upstream project the config follows (see
    :mod:`mask_former.modeling.recipe`): the criterion is built from it, the panoptic merge reads it, and so do
    the evaluators and the exporter.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        criterion: nn.Module,
        num_queries: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        metadata,
        size_divisibility: int,
        sem_seg_postprocess_before_inference: bool,
        pixel_mean: Tuple[float],
        pixel_std: Tuple[float],
        semantic_on: bool,
        panoptic_on: bool,
        instance_on: bool,
        test_topk_per_image: int,
        recipe: Recipe = RECIPES["mask2former"],
        channels_last: bool = False,
        inference_dtype: Optional[torch.dtype] = None,
        recycle_output_memory: bool = False,
    ):
        super().__init__()
        self.recipe = recipe
        self.backbone = backbone.to(memory_format=torch.channels_last) if channels_last else backbone
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.sem_seg_head = sem_seg_head
        self.criterion = criterion
        self.num_queries = num_queries
        self.overlap_threshold = overlap_threshold
        self.object_mask_threshold = object_mask_threshold
        self.metadata = metadata
        self.size_divisibility = backbone.size_divisibility if size_divisibility < 0 else size_divisibility
        self.sem_seg_postprocess_before_inference = sem_seg_postprocess_before_inference
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.test_topk_per_image = test_topk_per_image
        self.inference_dtype = inference_dtype
        self.recycle_output_memory = recycle_output_memory
        if not semantic_on and not sem_seg_postprocess_before_inference:
            raise ValueError(
                "MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE must be True when SEMANTIC_ON is False"
            )

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        if cfg.MODEL.MASK_FORMER.FOLD_FROZEN_BN:
            # Folding changes the class of convolutions: done here, to the backbone just built, not by the
            # constructor to modules it is handed.
            fold_frozen_batch_norm(backbone)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        recipe = build_recipe(cfg)
        test = cfg.MODEL.MASK_FORMER.TEST
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": recipe.build_criterion(cfg, sem_seg_head.num_classes),
            "num_queries": cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES,
            "object_mask_threshold": test.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": test.OVERLAP_THRESHOLD,
            "metadata": MetadataCatalog.get(cfg.DATASETS.TRAIN[0]) if cfg.DATASETS.TRAIN else None,
            "size_divisibility": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": (
                test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE or test.PANOPTIC_ON or test.INSTANCE_ON
            ),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": test.SEMANTIC_ON,
            "instance_on": test.INSTANCE_ON,
            "panoptic_on": test.PANOPTIC_ON,
            "test_topk_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "recipe": recipe,
            "channels_last": cfg.MODEL.MASK_FORMER.CHANNELS_LAST,
            "inference_dtype": autocast_dtype(test.AUTOCAST_DTYPE),
            "recycle_output_memory": test.RECYCLE_OUTPUT_MEMORY,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_images(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalize and pad the images into one ``[B, C, H_pad, W_pad]`` batch."""
        images = []
        for i, x in enumerate(batched_inputs):
            image = x["image"]
            if image.dim() != 3 or image.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(
                    f"batched_inputs[{i}]['image'] must be [{self.pixel_mean.shape[0]}, H, W], got {tuple(image.shape)}"
                )
            images.append((image.to(self.device) - self.pixel_mean) / self.pixel_std)
        batch = ImageList.from_tensors(images, self.size_divisibility)
        d = self.size_divisibility
        if d > 0 and tuple(batch.tensor.shape[-2:]) == (d, d):
            # A single cell at the coarsest stride leaves GroupNorm one value per group: widen.
            batch = ImageList(F.pad(batch.tensor, (0, d)), batch.image_sizes)
        return batch

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference_by_padded_size(batched_inputs)
        images = self.preprocess_images(batched_inputs)
        return self.losses(self.network(images), batched_inputs, images)

    def network(self, images: ImageList) -> Dict:
        """Backbone, pixel decoder and transformer decoder: the predictions (``pred_logits [B, Q, K+1]``,
        ``pred_masks [B, Q, H/4, W/4]``, ...) of the padded batch."""
        return self.sem_seg_head(self.backbone_features(images))

    def backbone_features(self, images: ImageList) -> Dict[str, Tensor]:
        return self.backbone(images.tensor.contiguous(memory_format=self.memory_format))

    def padded_size(self, image: Tensor) -> Tuple[int, int]:
        d = max(self.size_divisibility, 1)
        return tuple(padded_size(int(s), d) for s in image.shape[-2:])

    def inference_by_padded_size(self, batched_inputs: List[Dict]) -> List[Dict]:
        """Run images that pad to the same size together, others apart, so that an image's
        results never depend on the other images of the batch (padding changes normalization
        statistics, position encodings and attention)."""
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, x in enumerate(batched_inputs):
            groups.setdefault(self.padded_size(x["image"]), []).append(i)
        results: List[Dict] = [None] * len(batched_inputs)
        for indices in groups.values():
            group = [batched_inputs[i] for i in indices]
            images = self.preprocess_images(group)
            outputs = run_autocast(self.inference_dtype, self.device, self.network, images)
            for i, result in zip(indices, self.inference(outputs, group, images)):
                results[i] = result
        return results

    def losses(self, outputs, batched_inputs, images: ImageList) -> Dict[str, Tensor]:
        losses = self.criterion(outputs, self.prepare_targets(batched_inputs, images))
        weights = self.criterion.weight_dict
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, Tensor]]:
        """Per image, the criterion's targets: ``labels [N]`` and ``masks [N, H_pad, W_pad]``, the ground-truth
        masks padded to the batch's padded size."""
        if "instances" not in batched_inputs[0]:
            raise ValueError("MaskFormer training needs 'instances' (gt_classes, gt_masks) in every input dict")
        h_pad, w_pad = images.tensor.shape[-2:]
        new_targets = []
        for x in batched_inputs:
            per_image = x["instances"].to(self.device)
            gt_masks = per_image.gt_masks
            if isinstance(gt_masks, BitMasks):
                gt_masks = gt_masks.tensor
            padded = gt_masks.new_zeros((gt_masks.shape[0], h_pad, w_pad))
            padded[:, : gt_masks.shape[1], : gt_masks.shape[2]] = gt_masks
            new_targets.append({"labels": per_image.gt_classes, "masks": padded})
        return new_targets

    def thing_classes(self) -> set:
        mapping = getattr(self.metadata, "thing_dataset_id_to_contiguous_id", None)
        if mapping is None:
            name = getattr(self.metadata, "name", None)
            raise ValueError(
                f"Panoptic/instance inference needs the thing classes: metadata of dataset {name!r} "
                "(DATASETS.TRAIN[0]) has no thing_dataset_id_to_contiguous_id"
            )
        return set(mapping.values())

    def inference_tasks(self) -> InferenceTasks:
        return InferenceTasks(
            num_classes=self.sem_seg_head.num_classes,
            semantic=self.semantic_on,
            panoptic=self.panoptic_on,
            instance=self.instance_on,
            resize_before_inference=self.sem_seg_postprocess_before_inference,
            object_mask_threshold=self.object_mask_threshold,
            overlap_threshold=self.overlap_threshold,
            require_mask_confidence=self.recipe.require_mask_confidence,
            topk=self.test_topk_per_image,
            thing_classes=frozenset(self.thing_classes()) if self.panoptic_on else None,
            recycle_output_memory=self.recycle_output_memory,
        )

    def inference(self, outputs, batched_inputs, images: ImageList) -> List[Dict]:
        """Each image's results from the batch's predictions. The mask logits are resized to the padded size
        image by image (where :func:`uses_row_bands`, a band of rows at a time), never for the whole batch."""
        tasks = self.inference_tasks()
        padded_size = tuple(images.tensor.shape[-2:])
        infer = row_band_inference if uses_row_bands() else full_size_inference
        results = []
        for mask_cls, mask_pred, x, image_size in zip(
            outputs["pred_logits"], outputs["pred_masks"], batched_inputs, images.image_sizes
        ):
            output_size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            results.append(infer(
                mask_cls, mask_pred, tasks=tasks, padded_size=padded_size, image_size=tuple(image_size),
                output_size=output_size,
            ))
        return results
