"""``VideoMaskFormer``: Mask2Former for video instance segmentation (Mask2Former-VIS, arXiv 2112.10764).

The image model's backbone and pixel decoder run on every frame; the video transformer decoder
(``VideoMultiScaleMaskedTransformerDecoder``) lets each query attend to all the frames of a clip, so that a
query predicts one class and one mask per frame for an object through the clip.
"""
from typing import Dict, List, Tuple

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.structures import BitMasks, ImageList
from torch import Tensor
from torch.nn import functional as F

from ..criterion import SetCriterion
from ..heads.maskformer_head import select_decoder_input
from ..matcher import HungarianMatcher
from ..video import QueryTracks, binary_video_masks, top_pairs
from .maskformer import MaskFormer, loss_weights


def build_video_criterion(cfg, num_classes: int) -> SetCriterion:
    """Upstream's ``VideoSetCriterion`` with its ``VideoHungarianMatcher``: Mask2Former's losses and matching
    (sigmoid BCE + dice on sampled points) on each object's masks in all the frames of a clip."""
    mf = cfg.MODEL.MASK_FORMER
    matcher = HungarianMatcher(
        cost_class=mf.CLASS_WEIGHT, cost_mask=mf.MASK_WEIGHT, cost_dice=mf.DICE_WEIGHT, num_points=mf.TRAIN_NUM_POINTS
    )
    return SetCriterion(
        num_classes,
        matcher=matcher,
        weight_dict=loss_weights(cfg),
        eos_coef=mf.NO_OBJECT_WEIGHT,
        losses=["labels", "masks"],
        num_points=mf.TRAIN_NUM_POINTS,
        oversample_ratio=mf.OVERSAMPLE_RATIO,
        importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
    )


@META_ARCH_REGISTRY.register()
class VideoMaskFormer(MaskFormer):
    """Mask2Former-VIS (upstream's ``VideoMaskFormer``, same parameter names).

    ``forward(batched_inputs)`` takes a list of dicts, one per video, with ``image`` (the frames, each
    ``[C, H, W]`` in ``INPUT.FORMAT``) and, in training, ``instances`` (one ``Instances`` per frame, with the
    same objects in each: ``gt_ids`` (-1 where the object is absent from the frame), ``gt_classes``,
    ``gt_masks``). Training returns a dict of weighted losses. Inference takes one video (optionally with
    ``height`` / ``width``, the output size) and returns upstream's dict: ``image_size`` ``(height, width)``,
    ``pred_scores`` and ``pred_labels`` (lists of the 10 best (query, class) pairs) and ``pred_masks`` (their
    masks, bool ``[T, height, width]`` each).
    """

    # Upstream keeps the 10 best (query, class) pairs of a video.
    test_topk = 10
    # A checkpoint of the image model (COCO instance segmentation, upstream's initialization of the video
    # models) fits except for these, which depend on the number of classes: they keep their initialization.
    checkpoint_shape_mismatch_allowed = (
        "sem_seg_head.predictor.class_embed.weight",
        "sem_seg_head.predictor.class_embed.bias",
        "criterion.empty_weight",
    )

    @configurable
    def __init__(self, *, num_frames: int, window_size: int = 0, frame_chunk_size: int = 0, **kwargs):
        """
        Args:
            num_frames: frames of each training clip (``INPUT.SAMPLING_FRAME_NUM``).
            window_size: frames decoded at once at inference (0: the whole video), see ``QueryTracks``.
            frame_chunk_size: frames run through the backbone and pixel decoder at once at inference (0: all).
            Others: as ``MaskFormer``.
        """
        super().__init__(**kwargs)
        if window_size < 0 or frame_chunk_size < 0:
            raise ValueError(
                "MODEL.MASK_FORMER.TEST.WINDOW_SIZE and FRAME_CHUNK_SIZE must be >= 0, got "
                f"{window_size} and {frame_chunk_size}"
            )
        self.num_frames = num_frames
        self.window_size = window_size
        self.frame_chunk_size = frame_chunk_size

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        sem_seg_head = build_sem_seg_head(cfg, backbone.output_shape())
        mf = cfg.MODEL.MASK_FORMER
        return {
            "backbone": backbone,
            "sem_seg_head": sem_seg_head,
            "criterion": build_video_criterion(cfg, sem_seg_head.num_classes),
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "object_mask_threshold": mf.TEST.OBJECT_MASK_THRESHOLD,
            "overlap_threshold": mf.TEST.OVERLAP_THRESHOLD,
            "metadata": None,
            "size_divisibility": mf.SIZE_DIVISIBILITY,
            "sem_seg_postprocess_before_inference": True,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "semantic_on": False,
            "instance_on": True,
            "panoptic_on": False,
            "test_topk_per_image": cls.test_topk,
            "allow_checkpoint_shape_mismatch": mf.ALLOW_CHECKPOINT_SHAPE_MISMATCH,
            "channels_last": mf.CHANNELS_LAST,
            "fold_frozen_bn": mf.FOLD_FROZEN_BN,
            "num_frames": cfg.INPUT.SAMPLING_FRAME_NUM,
            "window_size": mf.TEST.WINDOW_SIZE,
            "frame_chunk_size": mf.TEST.FRAME_CHUNK_SIZE,
        }

    def forward(self, batched_inputs: List[Dict]):
        if not self.training:
            return self.inference_video(self.single_video(batched_inputs))
        for i, video in enumerate(batched_inputs):
            if len(video["image"]) != self.num_frames:
                raise ValueError(
                    f"batched_inputs[{i}] has {len(video['image'])} frames; training clips have "
                    f"INPUT.SAMPLING_FRAME_NUM={self.num_frames}"
                )
        images = self.preprocess_images([{"image": frame} for video in batched_inputs for frame in video["image"]])
        outputs = self.sem_seg_head(self.backbone_features(images))
        losses = self.criterion(outputs, self.prepare_targets(batched_inputs, images))
        weights = self.criterion.weight_dict
        return {k: v * weights[k] for k, v in losses.items() if k in weights}

    def prepare_targets(self, batched_inputs: List[Dict], images: ImageList) -> List[Dict[str, Tensor]]:
        """Per video, upstream's targets: ``masks`` float ``[N, T, H_pad, W_pad]``, ``ids [N, T]`` and
        ``labels [N]`` of the objects present in at least one frame. As upstream, an object's label is its
        ``gt_classes`` entry in the last frame."""
        h_pad, w_pad = images.tensor.shape[-2:]
        targets = []
        for i, video in enumerate(batched_inputs):
            if "instances" not in video:
                raise ValueError(
                    f"VideoMaskFormer training needs 'instances' (one Instances per frame) in batched_inputs[{i}]"
                )
            frames = [instances.to(self.device) for instances in video["instances"]]
            num = len(frames[0])
            if len(frames) != self.num_frames or any(len(f) != num for f in frames):
                raise ValueError(
                    f"batched_inputs[{i}]['instances'] must hold {self.num_frames} Instances of the same objects, got "
                    f"{[len(f) for f in frames]} objects"
                )
            masks = torch.zeros((num, self.num_frames, h_pad, w_pad), dtype=torch.bool, device=self.device)
            for t, frame in enumerate(frames):
                h, w = frame.image_size
                frame_masks = frame.gt_masks.tensor if isinstance(frame.gt_masks, BitMasks) else frame.gt_masks
                masks[:, t, :h, :w] = frame_masks
            ids = torch.stack([frame.gt_ids for frame in frames], dim=1)
            present = (ids != -1).any(dim=-1)
            labels = frames[-1].gt_classes[present]
            targets.append({"labels": labels, "ids": ids[present], "masks": masks[present].float()})
        return targets

    @staticmethod
    def single_video(batched_inputs: List[Dict]) -> Dict:
        """The one video of an inference batch; its frames must share one size."""
        if len(batched_inputs) != 1:
            raise ValueError(f"VideoMaskFormer inference takes one video at a time, got {len(batched_inputs)}")
        video = batched_inputs[0]
        sizes = {tuple(frame.shape[-2:]) for frame in video["image"]}
        if len(sizes) != 1:
            raise ValueError(f"The frames of a video must share one size at inference, got sizes {sorted(sizes)}")
        return video

    def clip_outputs(self, images: ImageList) -> Dict[str, Tensor]:
        """The decoder's outputs for the frames of ``images`` as one clip. The backbone and the pixel decoder see
        ``frame_chunk_size`` frames at a time (each frame's features are its own), then the decoder sees all."""
        chunk = self.frame_chunk_size
        if chunk == 0 or len(images.tensor) <= chunk:
            return self.sem_seg_head(self.backbone_features(images))
        head = self.sem_seg_head
        decoder_inputs, mask_features = [], []
        for frames in images.tensor.split(chunk):
            features = self.backbone(frames.contiguous(memory_format=self.memory_format))
            per_pixel, encoder, multi_scale = head.pixel_decoder.forward_features(features)
            name = head.transformer_in_feature
            decoder_inputs.append(select_decoder_input(name, features, per_pixel, encoder, multi_scale))
            mask_features.append(per_pixel)
            del features, encoder, multi_scale
        decoder_input = [torch.cat(levels) for levels in zip(*decoder_inputs)]
        del decoder_inputs
        return head.predictor(decoder_input, torch.cat(mask_features))

    def inference_video(self, video: Dict) -> Dict:
        """Upstream's outputs for one video, window by window (``window_size``; one window by default), with the
        top pairs chosen before their masks are upsampled, ``frame_chunk_size`` frames at a time."""
        frames = list(video["image"])
        window = self.window_size if self.window_size > 0 else len(frames)
        tracks = QueryTracks()
        for start in range(0, len(frames), window):
            # Every window has the same (padded) size: the frames of a video share one size.
            images = self.preprocess_images([{"image": frame} for frame in frames[start:start + window]])
            outputs = self.clip_outputs(images)
            tracks.add(outputs["pred_logits"][0], outputs["pred_masks"][0], outputs["pred_embds"][0])
            del outputs
        scores, labels, queries = top_pairs(tracks.scores(), self.test_topk)
        image_size, output_size = images.image_sizes[0], self.output_size(video, images)
        masks = binary_video_masks(
            tracks.masks(queries), images.tensor.shape[-2:], image_size, output_size, frame_chunk=self.frame_chunk_size
        )
        return video_result(output_size, scores, labels, masks)

    def inference_video_reference(self, video: Dict) -> Dict:
        """:meth:`inference_video` (its plain reference) as upstream computes it: every frame at once through the
        whole model, every query's masks upsampled, then the top pairs."""
        images = self.preprocess_images([{"image": frame} for frame in video["image"]])
        outputs = self.sem_seg_head(self.backbone_features(images))
        mask_logits = F.interpolate(
            outputs["pred_masks"][0], size=tuple(images.tensor.shape[-2:]), mode="bilinear", align_corners=False
        )
        scores, labels, queries = top_pairs(F.softmax(outputs["pred_logits"][0], dim=-1)[:, :-1], self.test_topk)
        (height, width), output_size = images.image_sizes[0], self.output_size(video, images)
        cropped = mask_logits[queries][:, :, :height, :width]
        masks = F.interpolate(cropped, size=output_size, mode="bilinear", align_corners=False) > 0
        return video_result(output_size, scores, labels, masks)

    @staticmethod
    def output_size(video: Dict, images: ImageList) -> Tuple[int, int]:
        """``(height, width)`` asked for by the input, by default the frames' size."""
        height, width = images.image_sizes[0]
        return int(video.get("height", height)), int(video.get("width", width))


def video_result(output_size: Tuple[int, int], scores: Tensor, labels: Tensor, masks: Tensor) -> Dict:
    """Upstream's output dict: lists of the pairs' scores, classes and bool ``[T, height, width]`` masks."""
    return {
        "image_size": output_size,
        "pred_scores": scores.tolist(),
        "pred_labels": labels.tolist(),
        "pred_masks": list(masks.cpu()),
    }
