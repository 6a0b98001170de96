"""Mask2Former-VIS's transformer decoder: Mask2Former's, with each query attending to all the frames of a clip.

A query stands for one object through the clip: its mask embedding times every frame's per-pixel embeddings
gives its mask in every frame, and its masked cross-attention reads the features of all the frames at once,
with a position encoding in time as well as space. Everything else is the image decoder's.
"""
from typing import List, Tuple

import torch
from detectron2.config import configurable
from torch import Tensor

from ..build import TRANSFORMER_DECODER_REGISTRY
from ..transformer_blocks import PositionEmbeddingSine3D
from .mask2former_decoder import MaskInputs, MultiScaleMaskedTransformerDecoder, Prediction


@TRANSFORMER_DECODER_REGISTRY.register()
class VideoMultiScaleMaskedTransformerDecoder(MultiScaleMaskedTransformerDecoder):
    """Mask2Former's decoder over clips. ``forward(x, mask_features)`` takes the frames of the clips, ``B * T``
    images clip by clip: three feature maps ``[B * T, C_in, h_l, w_l]`` (coarsest first) and ``mask_features
    [B * T, mask_dim, H, W]``. The queries are per clip: ``pred_logits [B, Q, K+1]``, ``pred_masks
    [B, Q, T, H, W]``, ``aux_outputs`` as the image decoder's; in eval also ``pred_embds [B, Q, C]``, the
    queries after the last layer as the prediction heads read them, by which the windows of a long video are
    associated.

    In training a batch holds clips of ``num_frames`` frames (``INPUT.SAMPLING_FRAME_NUM``); in eval it is
    one clip of any length (as upstream). Parameters and their names are the image decoder's.
    """

    @configurable
    def __init__(self, in_channels: int, mask_classification: bool = True, *, num_frames: int, **kwargs):
        """
        Args:
            num_frames: frames of each training clip.
            Others: as ``MultiScaleMaskedTransformerDecoder``.
        """
        super().__init__(in_channels, mask_classification, **kwargs)
        self.num_frames = num_frames
        self.pe_layer = PositionEmbeddingSine3D(kwargs["hidden_dim"] // 2, normalize=True)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        ret = super().from_config(cfg, in_channels, mask_classification)
        ret["num_frames"] = cfg.INPUT.SAMPLING_FRAME_NUM
        return ret

    def clip_shape(self, images: int) -> Tuple[int, int]:
        """``(clips, frames)`` of a batch of ``images`` frames."""
        if not self.training:
            return 1, images
        if images % self.num_frames:
            raise ValueError(
                f"{images} training frames are not clips of INPUT.SAMPLING_FRAME_NUM={self.num_frames} frames"
            )
        return images // self.num_frames, self.num_frames

    def level_memories(self, x: List[Tensor]):
        """Per level, the features of all the frames of a clip (projected, plus the level embedding) and their
        position encodings in space and time, both ``[T * h * w, B, C]`` (frame-major)."""
        clips, frames = self.clip_shape(x[0].shape[0])
        memories, positions = [], []
        for level, (proj, features) in enumerate(zip(self.input_proj, x)):
            # [B, T, C, h, w] -> [T, h, w, B, C] -> [T * h * w, B, C]
            positions.append(self.pe_layer(features.unflatten(0, (clips, frames))).permute(1, 3, 4, 0, 2).flatten(0, 2))
            projected = proj(features).flatten(2) + self.level_embed.weight[level][None, :, None]
            memories.append(projected.unflatten(0, (clips, frames)).permute(1, 3, 0, 2).flatten(0, 1))
        return memories, positions

    def mask_inputs(self, mask_features: Tensor, sizes: List[tuple]) -> MaskInputs:
        """The image decoder's, with the per-pixel embeddings of each clip ``[B, T, mask_dim, H, W]``. The mask
        logits keep the einsum's own backward (the joined backward is for image features)."""
        clips, frames = self.clip_shape(mask_features.shape[0])
        return super().mask_inputs(mask_features.unflatten(0, (clips, frames)), sizes)._replace(joined=False)

    def query_mask_logits(self, embed: Tensor, features: Tensor) -> Tensor:
        """``[B, Q, C]`` mask embeddings x ``[B, T, C, H, W]`` per-pixel embeddings -> ``[B, Q, T, H, W]``."""
        return torch.einsum("bqc,btchw->bqthw", embed, features)

    def outputs(self, predictions: List[Prediction], inputs: MaskInputs):
        out = super().outputs(predictions, inputs)
        if not self.training:
            out["pred_embds"] = predictions[-1].queries
        return out
