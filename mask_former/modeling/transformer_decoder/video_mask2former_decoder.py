"""Mask2Former-VIS's transformer decoder: Mask2Former's, with each query attending to all the frames of a clip.

A query stands for one object through the clip: its mask embedding times every frame's per-pixel embeddings
gives its mask in every frame, and its masked cross-attention reads the features of all the frames at once,
with a position encoding in time as well as space.
"""
import math
from typing import List, Optional, Tuple

import torch
from detectron2.config import configurable
from torch import Tensor, nn

from ..build import TRANSFORMER_DECODER_REGISTRY
from ..layers import PositionEmbeddingSine
from .common import pack_outputs
from .mask2former_decoder import MultiScaleMaskedTransformerDecoder


class PositionEmbeddingSine3D(nn.Module):
    """Sine / cosine position encoding of a clip ``[B, T, C, H, W]`` (upstream's ``PositionEmbeddingSine3D``).

    The image encoding of each frame (``num_pos_feats`` channels for y, then as many for x) plus an encoding
    of the frame's position in time over all ``2 * num_pos_feats`` channels. ``forward(x, mask [B, T, H, W] or
    None) -> [B, T, 2 * num_pos_feats, H, W]``; ``True`` in ``mask`` marks padding.
    """

    def __init__(self, num_pos_feats: int = 64, temperature: int = 10000, normalize: bool = False, scale=None):
        super().__init__()
        self.spatial = PositionEmbeddingSine(num_pos_feats, temperature, normalize, scale)
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if x.dim() != 5:
            raise ValueError(f"PositionEmbeddingSine3D expects a [B, T, C, H, W] clip, got shape {tuple(x.shape)}")
        batch, frames, _, height, width = x.shape
        if mask is None:
            mask = torch.zeros((batch, frames, height, width), device=x.device, dtype=torch.bool)
        spatial = self.spatial(x.flatten(0, 1), mask.flatten(0, 1)).unflatten(0, (batch, frames))
        z_embed = (~mask).cumsum(1, dtype=torch.float32)
        if self.normalize:
            z_embed = z_embed / (z_embed[:, -1:] + 1e-6) * self.scale
        channels = 2 * self.num_pos_feats
        dim_t = torch.arange(channels, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / channels)
        angles = z_embed[..., None] / dim_t
        pos_z = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
        return spatial + pos_z.permute(0, 1, 4, 2, 3)


@TRANSFORMER_DECODER_REGISTRY.register()
class VideoMultiScaleMaskedTransformerDecoder(MultiScaleMaskedTransformerDecoder):
    """Mask2Former's decoder over clips: the inputs are the frames of the clips, ``B * T`` images, clip by
    clip; the queries are per clip; the masks are ``[B, Q, T, H, W]``.

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

    def forward(self, x: List[Tensor], mask_features: Tensor, mask: Tensor = None):
        """
        Args:
            x: three feature maps ``[B * T, C_in, h_l, w_l]``, coarsest first, the frames of each clip in turn.
            mask_features: ``[B * T, mask_dim, H, W]``.
            mask: ignored (padding is not masked, as upstream).

        Returns:
            dict with ``pred_logits [B, Q, K+1]``, ``pred_masks [B, Q, T, H, W]`` and ``aux_outputs`` (in
            training, the ``DEC_LAYERS - 1`` earlier predictions; in eval, empty); in eval also ``pred_embds
            [B, Q, C]``, the queries after the last layer (normalized as the prediction heads read them), by
            which windows of a long video are associated.
        """
        clips, frames = self.clip_shape(mask_features.shape[0])
        output, predictions_class, predictions_mask = self.decode(x, mask_features.unflatten(0, (clips, frames)))
        out = pack_outputs(predictions_class, predictions_mask)
        if not self.training:
            out["pred_embds"] = self.decoder_norm(output).transpose(0, 1)
        return out

    def memory(self, x: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per level, the features of all the frames of a clip plus the level embedding, and their position
        encodings, both ``[T * h_l * w_l, B, C]`` (frame-major)."""
        clips, frames = self.clip_shape(x[0].shape[0])
        src, pos = [], []
        for level, (proj, features) in enumerate(zip(self.input_proj, x)):
            clip = features.unflatten(0, (clips, frames))
            # [B, T, C, h, w] -> [T, h, w, B, C] -> [T * h * w, B, C]
            pos.append(self.pe_layer(clip).permute(1, 3, 4, 0, 2).flatten(0, 2))
            projected = proj(features).flatten(2) + self.level_embed.weight[level][None, :, None]
            src.append(projected.unflatten(0, (clips, frames)).permute(1, 3, 0, 2).flatten(0, 1))
        return src, pos

    def joins_mask_logits(self, mask_features: Tensor) -> bool:
        """Never: video masks keep the einsum's own backward (the joined backward is for image features)."""
        return False

    def query_mask_logits(self, embed: Tensor, mask_features: Tensor) -> Tensor:
        """``[B, Q, C]`` embeddings x ``[B, T, C, H, W]`` features -> ``[B, Q, T, H, W]`` mask logits."""
        return torch.einsum("bqc,btchw->bqthw", embed, mask_features)
