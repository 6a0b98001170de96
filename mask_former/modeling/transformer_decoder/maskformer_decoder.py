"""MaskFormer's transformer decoder: DETR's transformer on one feature map."""
import torch
from detectron2.config import configurable
from torch import Tensor, nn
from torch.nn import functional as F

from ...layers import Linear
from ..build import TRANSFORMER_DECODER_REGISTRY
from ..fast_paths.mask_logits import mask_logits
from ..transformer import Transformer
from ..transformer_blocks import MLP, PositionEmbeddingSine
from .common import decoder_config, input_projection, pack_outputs


@TRANSFORMER_DECODER_REGISTRY.register()
class StandardTransformerDecoder(nn.Module):
    """Queries attend to one feature map (``res5``, the pixel decoder's encoder output, or the
    mask features); each decoder layer's queries give class logits and mask embeddings, whose dot
    products with the per-pixel embeddings are the masks."""

    @configurable
    def __init__(
        self, in_channels: int, mask_classification: bool = True, *,
        num_classes: int, hidden_dim: int, num_queries: int, nheads: int, dropout: float,
        dim_feedforward: int,
        enc_layers: int,
        dec_layers: int,
        pre_norm: bool,
        deep_supervision: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        super().__init__()
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(
            d_model=hidden_dim, dropout=dropout, nhead=nheads, dim_feedforward=dim_feedforward,
            num_encoder_layers=enc_layers, num_decoder_layers=dec_layers, normalize_before=pre_norm,
            return_intermediate_dec=deep_supervision,
        )
        self.num_queries = num_queries
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = input_projection(in_channels, hidden_dim, enforce_input_project)
        self.aux_loss = deep_supervision
        if mask_classification:
            self.class_embed = Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        ret = decoder_config(cfg, in_channels, mask_classification)
        ret.update(
            dropout=cfg.MODEL.MASK_FORMER.DROPOUT,
            enc_layers=cfg.MODEL.MASK_FORMER.ENC_LAYERS,
            dec_layers=cfg.MODEL.MASK_FORMER.DEC_LAYERS,
            deep_supervision=cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION,
        )
        return ret

    def forward(self, x: Tensor, mask_features: Tensor, mask: Tensor = None):
        """
        Args:
            x: ``[B, C_in, h, w]``, the decoder's input feature.
            mask_features: ``[B, mask_dim, H, W]``.
            mask: ``[B, H', W']`` bool padding mask or None.

        Returns:
            dict with ``pred_logits [B, Q, K+1]``, ``pred_masks [B, Q, H, W]`` and ``aux_outputs``
            (the other decoder layers' predictions when deep supervision is on, else empty).
        """
        if mask is not None:
            mask = F.interpolate(mask[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
        hs, _ = self.transformer(self.input_proj(x), mask, self.query_embed.weight, self.pe_layer(x, mask))
        if not self.aux_loss:
            hs = hs[-1:]
        embed = self.mask_embed(hs)  # [L, B, Q, C]
        layers, _, queries, _ = embed.shape
        # einsum("lbqc,bchw->lbqhw") as one product per image over every layer's queries, as einsum lays it out.
        masks = mask_logits(embed.transpose(0, 1).flatten(1, 2), mask_features, self)
        masks = masks.unflatten(1, (layers, queries)).transpose(0, 1)
        classes = self.class_embed(hs) if self.mask_classification else None
        return pack_outputs(None if classes is None else list(classes), list(masks))
