"""Mask2Former's transformer decoder: masked attention over three scales, round-robin."""
from typing import List, NamedTuple, Optional

import torch
from detectron2.config import configurable
from torch import Tensor, nn

from ...layers import Linear
from ..build import TRANSFORMER_DECODER_REGISTRY
from ..fast_paths.mask_logits import joined_mask_logits, joins_mask_logits, mask_logits
from ..transformer_blocks import MLP, CrossAttentionLayer, FFNLayer, PositionEmbeddingSine, SelfAttentionLayer
from .common import decoder_config, input_projection, pack_outputs, resize_bilinear


class Prediction(NamedTuple):
    """One prediction of the decoder: class logits ``[B, Q, K+1]``, mask embeddings ``[B, Q, C]``, mask logits
    ``[B, Q, H, W]``, the attention mask of the next layer ``[B * heads, Q, h*w]`` (None after the last), and
    the normalized queries that the heads read ``[B, Q, C]``. Eval-time predictions before the last layer hold
    the attention mask only."""

    classes: Optional[Tensor] = None
    embed: Optional[Tensor] = None
    masks: Optional[Tensor] = None
    attn_mask: Optional[Tensor] = None
    queries: Optional[Tensor] = None


class MaskInputs(NamedTuple):
    """What the predictions read in one forward: the per-pixel embeddings ``[B, C, H, W]``, the size of each
    level ``(h, w)``, in eval those embeddings resized to each level (None in training), and whether the mask
    logits' backward is joined over the layers (:func:`joins_mask_logits`)."""

    features: Tensor
    sizes: List[tuple]
    per_level: Optional[List[Tensor]]
    joined: bool


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
        self.class_embed = Linear(hidden_dim, num_classes + 1)
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

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Checkpoints written before version 2 call the query features "static_query".
        if (local_metadata.get("version") or 0) < 2:
            for key in [k for k in state_dict if k.startswith(prefix + "static_query")]:
                state_dict[key.replace("static_query", "query_feat")] = state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

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
        if len(x) != self.num_feature_levels:
            raise ValueError(
                f"MultiScaleMaskedTransformerDecoder needs {self.num_feature_levels} feature maps, got {len(x)}"
            )
        memories, positions = self.level_memories(x)
        queries, query_pos = self.initial_queries(batch=memories[0].shape[1])
        inputs = self.mask_inputs(mask_features, [tuple(f.shape[-2:]) for f in x])
        predictions = [self.predict(queries, inputs, next_level=0, last=self.num_layers == 0)]
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            attn_mask = predictions[-1].attn_mask
            queries = self.transformer_cross_attention_layers[i](
                queries, memories[level], memory_mask=attn_mask, pos=positions[level], query_pos=query_pos
            )
            queries = self.transformer_self_attention_layers[i](queries, query_pos=query_pos)
            queries = self.transformer_ffn_layers[i](queries)
            next_level = (i + 1) % self.num_feature_levels
            predictions.append(self.predict(queries, inputs, next_level=next_level, last=i == self.num_layers - 1))
        return self.outputs(predictions, inputs)

    def level_memories(self, x: List[Tensor]):
        """The cross-attention's memory of each level ``[h*w, B, C]`` (projected, plus the level embedding) and
        its position encoding ``[h*w, B, C]``."""
        positions = [self.pe_layer(f, None).flatten(2).permute(2, 0, 1) for f in x]
        memories = [
            (proj(f).flatten(2) + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1)
            for i, (proj, f) in enumerate(zip(self.input_proj, x))
        ]
        return memories, positions

    def initial_queries(self, batch: int):
        """The learned query features and query positions, ``[Q, B, C]`` each."""
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, batch, 1)
        return self.query_feat.weight.unsqueeze(1).repeat(1, batch, 1), query_pos

    def mask_inputs(self, mask_features: Tensor, sizes: List[tuple]) -> MaskInputs:
        """In training every layer's predictions are supervised, and on the CPU the backward of their mask logits
        is joined (:func:`joined_mask_logits`). In eval only the last prediction is returned, so the earlier ones
        need only the attention mask at the next level's (low) resolution: bilinear resizing is linear, so
        ``resize(embed . features) == embed . resize(features)``, and the features are resized once per level
        instead of every layer's masks."""
        if self.training:
            return MaskInputs(mask_features, sizes, None, joins_mask_logits(mask_features))
        per_level = [resize_bilinear(mask_features, size) for size in sizes]
        return MaskInputs(mask_features, sizes, per_level, False)

    def predict(self, queries: Tensor, inputs: MaskInputs, *, next_level: int, last: bool) -> Prediction:
        """The prediction heads on the decoder's queries ``[Q, B, C]``: class logits, mask logits, and the attention
        mask of the next layer, at ``next_level``'s size (none after the last layer). In eval before the last
        layer, the attention mask alone (see :meth:`mask_inputs`). Where ``inputs.joined`` the mask logits have no
        graph: :meth:`outputs` joins every layer's at once."""
        decoded = self.decoder_norm(queries).transpose(0, 1)
        if inputs.per_level is not None and not last:
            masks = self.query_mask_logits(self.mask_embed(decoded), inputs.per_level[next_level])
            return Prediction(attn_mask=self.attention_mask(masks))
        classes = self.class_embed(decoded)
        embed = self.mask_embed(decoded)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not inputs.joined):
            masks = self.query_mask_logits(embed, inputs.features)
        if last:
            return Prediction(classes, embed, masks, queries=decoded)
        resized = resize_bilinear(masks, inputs.sizes[next_level])
        return Prediction(classes, embed, masks, self.attention_mask(resized), decoded)

    def query_mask_logits(self, embed: Tensor, features: Tensor) -> Tensor:
        """The queries' mask logits: ``[B, Q, C]`` mask embeddings x ``[B, C, H, W]`` per-pixel embeddings ->
        ``[B, Q, H, W]`` (:func:`mask_logits`; where ``inputs.joined``, :meth:`outputs` joins the backward of
        logits computed without a graph)."""
        return mask_logits(embed, features, self)

    def outputs(self, predictions: List[Prediction], inputs: MaskInputs):
        """Every prediction in training (the masks joined to the graph where ``inputs.joined``), the last in eval,
        as the output dict."""
        if not self.training:
            predictions = predictions[-1:]
        masks = [p.masks for p in predictions]
        if inputs.joined:
            masks = joined_mask_logits(inputs.features, [p.embed for p in predictions], masks)
        return pack_outputs([p.classes for p in predictions], masks)

    def attention_mask(self, logits: Tensor) -> Tensor:
        """``[B, Q, *spatial]`` mask logits (image: ``h, w``) -> ``[B, Q, prod(spatial)]`` bool, True = background
        (not attended), the same for every head (:class:`CrossAttentionLayer` copies it per head where it needs
        to). A query whose mask is empty at this scale attends everywhere."""
        # sigmoid(x) < 0.5  <=>  x < 0
        background = logits.flatten(2).detach() < 0
        # (Written without in-place boolean indexing so that it exports to ONNX.)
        return background & ~background.all(-1, keepdim=True)
