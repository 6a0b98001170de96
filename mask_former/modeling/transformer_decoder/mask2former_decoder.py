"""Mask2Former's transformer decoder: masked attention over three scales, round-robin."""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from detectron2.config import configurable

from ..build import TRANSFORMER_DECODER_REGISTRY
from ..layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    PositionEmbeddingSine,
    SelfAttentionLayer,
    joined_mask_logits,
    joins_mask_logits,
    mask_logits_reference,
)
from .common import decoder_config, input_projection, pack_outputs, resize_bilinear


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Learnable query features and positions. Layer ``i`` cross-attends to scale ``i % 3`` of the
    pixel decoder (coarsest first), only where the previous prediction's mask is foreground
    (masked attention), then self-attends, then applies a feed-forward block. Predictions are
    made from the initial queries and after every layer."""

    _version = 2
    num_feature_levels = 3

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ):
        super().__init__()
        if not mask_classification:
            raise ValueError("MultiScaleMaskedTransformerDecoder only supports mask classification")
        self.mask_classification = True
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward, dropout=0.0, normalize_before=pre_norm) for _ in range(dec_layers)
        )
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList(
            input_projection(in_channels, hidden_dim, enforce_input_project) for _ in range(self.num_feature_levels)
        )
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        if cfg.MODEL.MASK_FORMER.DEC_LAYERS < 1:
            raise ValueError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1, got {cfg.MODEL.MASK_FORMER.DEC_LAYERS}")
        ret = decoder_config(cfg, in_channels, mask_classification)
        # The predictions from the initial queries count as one layer, so that the number of
        # supervised outputs equals DEC_LAYERS as in MaskFormer.
        ret["dec_layers"] = cfg.MODEL.MASK_FORMER.DEC_LAYERS - 1
        return ret

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # Checkpoints written before version 2 call the query features "static_query".
        if (local_metadata.get("version") or 0) < 2:
            for key in [k for k in state_dict if k.startswith(prefix + "static_query")]:
                state_dict[key.replace("static_query", "query_feat")] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def forward(self, x: List[Tensor], mask_features: Tensor, mask: Tensor = None):
        """
        Args:
            x: three feature maps ``[B, C_in, h_l, w_l]``, coarsest first.
            mask_features: ``[B, mask_dim, H, W]``.
            mask: ignored (padding is not masked, as upstream).

        Returns:
            dict with ``pred_logits [B, Q, K+1]``, ``pred_masks [B, Q, H, W]`` and ``aux_outputs``
            (in training, the ``DEC_LAYERS - 1`` earlier predictions; in eval, empty).
        """
        _, predictions_class, predictions_mask = self.decode(x, mask_features)
        return pack_outputs(predictions_class, predictions_mask)

    def memory(self, x: List[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """What the queries attend to: per level, the projected features plus the level embedding, and their
        position encodings, both ``[h_l * w_l, B, C]``."""
        pos = [self.pe_layer(f, None).flatten(2).permute(2, 0, 1) for f in x]
        src = [
            (proj(f).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1)
            for i, (proj, f) in enumerate(zip(self.input_proj, x))
        ]
        return src, pos

    def decode(self, x: List[Tensor], mask_features: Tensor) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
        """The decoder's layers: the last layer's queries ``[Q, B, C]`` and every supervised layer's class and
        mask logits (in eval, the last layer's only). ``mask_features`` is whatever :meth:`query_mask_logits`
        takes."""
        if len(x) != self.num_feature_levels:
            raise ValueError(
                f"{type(self).__name__} needs {self.num_feature_levels} feature maps, got {len(x)}"
            )
        sizes = [tuple(f.shape[-2:]) for f in x]
        src, pos = self.memory(x)
        batch = src[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1)
        heads = self.prediction_heads(mask_features, sizes)

        classes, embed, masks, attn_mask = heads(output, 0, final=self.num_layers == 0)
        predictions_class, mask_embeds, predictions_mask = [classes], [embed], [masks]
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            output = self.transformer_cross_attention_layers[i](
                output, src[level], memory_mask=attn_mask, pos=pos[level], query_pos=query_pos
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_pos)
            output = self.transformer_ffn_layers[i](output)
            next_level = (i + 1) % self.num_feature_levels
            classes, embed, masks, attn_mask = heads(output, next_level, final=i == self.num_layers - 1)
            predictions_class.append(classes)
            mask_embeds.append(embed)
            predictions_mask.append(masks)
        if not self.training:
            predictions_class, predictions_mask = predictions_class[-1:], predictions_mask[-1:]
        elif self.joins_mask_logits(mask_features):
            predictions_mask = joined_mask_logits(mask_features, mask_embeds, predictions_mask)
        return output, predictions_class, predictions_mask

    def prediction_heads(self, mask_features: Tensor, sizes):
        """``heads(output, level, final) -> (class logits, mask embeddings, mask logits, attention mask at
        sizes[level])`` (see :meth:`forward_prediction_heads`).

        In training every layer's predictions are supervised. In eval only the final ones are
        returned, so the other layers only need the attention mask at its (low) resolution:
        bilinear resizing is linear, so ``resize(embed . features) == embed . resize(features)``,
        and the features are resized once per scale instead of every layer's masks.
        """
        if self.training:
            return lambda output, level, final: self.forward_prediction_heads(
                output, mask_features, None if final else sizes[level]
            )
        resized = [resize_bilinear(mask_features, size) for size in sizes]

        def heads(output, level, final):
            if final:
                return self.forward_prediction_heads(output, mask_features, None)
            mask_embed = self.mask_embed(self.decoder_norm(output).transpose(0, 1))
            return None, None, None, self.attention_mask(self.query_mask_logits(mask_embed, resized[level]))

        return heads

    def joins_mask_logits(self, mask_features: Tensor) -> bool:
        """In training, where :func:`joins_mask_logits`: every layer's masks are supervised, and their backward
        runs once for all layers."""
        return self.training and joins_mask_logits(mask_features)

    def query_mask_logits(self, embed: Tensor, mask_features: Tensor) -> Tensor:
        """The queries' mask logits: ``[B, Q, C]`` embeddings x ``[B, C, H, W]`` features -> ``[B, Q, H, W]``."""
        return mask_logits_reference(embed, mask_features)

    def attention_mask(self, mask_logits: Tensor) -> Tensor:
        """``[B, Q, *spatial]`` mask logits -> ``[B * heads, Q, prod(spatial)]`` bool, True = background (not attended).
        A query whose mask is empty at this scale attends everywhere (decided before the copy per head)."""
        # sigmoid(x) < 0.5  <=>  x < 0
        background = mask_logits.flatten(2).detach() < 0
        # (Written without in-place boolean indexing so that it exports to ONNX.)
        background = background & ~background.all(-1, keepdim=True)
        return background.unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1)

    def forward_prediction_heads(self, output: Tensor, mask_features: Tensor, attn_mask_target_size: Optional[tuple]):
        """Class logits ``[B, Q, K+1]``, mask embeddings ``[B, Q, C]``, mask logits ``[B, Q, H, W]`` and the
        attention mask for the next layer's scale (None without a size: after the last layer there is none).
        Where :meth:`joins_mask_logits`, the mask logits have no graph: the caller joins every layer's at once
        (:func:`joined_mask_logits`)."""
        decoded = self.decoder_norm(output).transpose(0, 1)
        classes = self.class_embed(decoded)
        embed = self.mask_embed(decoded)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.joins_mask_logits(mask_features)):
            masks = self.query_mask_logits(embed, mask_features)
        if attn_mask_target_size is None:
            return classes, embed, masks, None
        return classes, embed, masks, self.attention_mask(resize_bilinear(masks, attn_mask_target_size))
