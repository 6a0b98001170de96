"""The DETR encoder-decoder transformer used by MaskFormer (``StandardTransformerDecoder``) and by
``TransformerEncoderPixelDecoder``. Parameter names follow upstream so checkpoints load as they are."""
from typing import Optional

import torch
from torch import Tensor, nn

from .transformer_blocks import (
    clones,
    cross_attention,
    feed_forward,
    feed_forward_modules,
    residual,
    self_attention,
    xavier_init_matrices,
)


class TransformerEncoderLayer(nn.Module):
    """Self-attention then feed-forward over ``src [HW, B, C]``."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1, self.dropout, self.linear2 = feed_forward_modules(d_model, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(self, src: Tensor, src_mask=None, src_key_padding_mask=None, pos: Optional[Tensor] = None) -> Tensor:
        attend = self_attention(self.self_attn, pos, src_mask, src_key_padding_mask)
        src = residual(src, attend, self.norm1, self.dropout1, self.normalize_before)
        ffn = feed_forward(self.linear1, self.linear2, self.dropout)
        return residual(src, ffn, self.norm2, self.dropout2, self.normalize_before)


class TransformerDecoderLayer(nn.Module):
    """Self-attention over queries ``[Q, B, C]``, cross-attention to ``memory [HW, B, C]``, feed-forward."""

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
        normalize_before: bool = False,
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1, self.dropout, self.linear2 = feed_forward_modules(d_model, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_key_padding_mask=None,
        pos: Optional[Tensor] = None, query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        pre = self.normalize_before
        tgt = residual(tgt, self_attention(self.self_attn, query_pos), self.norm1, self.dropout1, pre)
        attend = cross_attention(self.multihead_attn, memory, pos, query_pos, key_padding_mask=memory_key_padding_mask)
        tgt = residual(tgt, attend, self.norm2, self.dropout2, pre)
        ffn = feed_forward(self.linear1, self.linear2, self.dropout)
        return residual(tgt, ffn, self.norm3, self.dropout3, pre)


class TransformerEncoder(nn.Module):
    def __init__(self, encoder_layer: nn.Module, num_layers: int, norm: Optional[nn.Module] = None):
        super().__init__()
        self.layers = clones(encoder_layer, num_layers)
        self.norm = norm

    def forward(self, src: Tensor, mask=None, src_key_padding_mask=None, pos: Optional[Tensor] = None) -> Tensor:
        for layer in self.layers:
            src = layer(src, src_mask=mask, src_key_padding_mask=src_key_padding_mask, pos=pos)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    """Returns ``[num_layers, Q, B, C]`` (every layer's normalized output) when
    ``return_intermediate``, else ``[1, Q, B, C]``."""

    def __init__(self, decoder_layer: nn.Module, num_layers: int, norm: nn.Module, return_intermediate: bool = False):
        super().__init__()
        self.layers = clones(decoder_layer, num_layers)
        self.norm = norm
        self.return_intermediate = return_intermediate

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask=None, pos=None, query_pos=None) -> Tensor:
        intermediate = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_key_padding_mask=memory_key_padding_mask, pos=pos, query_pos=query_pos)
            if self.return_intermediate:
                intermediate.append(self.norm(tgt))
        if self.return_intermediate:
            return torch.stack(intermediate)
        return self.norm(tgt).unsqueeze(0)


class TransformerEncoderOnly(nn.Module):
    """A DETR encoder on one feature map: ``forward(src [B, C, H, W], mask [B, H, W] or None,
    pos [B, C, H, W]) -> [B, C, H, W]``."""

    def __init__(
        self, d_model=512, nhead=8, num_encoder_layers=6, dim_feedforward=2048, dropout=0.1, normalize_before=False
    ):
        super().__init__()
        layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        encoder_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.encoder = TransformerEncoder(layer, num_encoder_layers, encoder_norm)
        xavier_init_matrices(self)

    def forward(self, src: Tensor, mask: Optional[Tensor], pos_embed: Tensor) -> Tensor:
        b, c, h, w = src.shape
        memory = self.encoder(
            src.flatten(2).permute(2, 0, 1),
            src_key_padding_mask=None if mask is None else mask.flatten(1),
            pos=pos_embed.flatten(2).permute(2, 0, 1),
        )
        return memory.permute(1, 2, 0).view(b, c, h, w)


class Transformer(nn.Module):
    """DETR's transformer: ``forward(src [B, C, H, W], mask, query_embed [Q, C], pos_embed [B, C, H, W])``
    returns ``(hs [layers, B, Q, C], memory [B, C, H, W])``."""

    def __init__(
        self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
        dropout=0.1, normalize_before=False, return_intermediate_dec=False,
    ):
        super().__init__()
        enc_layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        enc_norm = nn.LayerNorm(d_model) if normalize_before else None
        self.encoder = TransformerEncoder(enc_layer, num_encoder_layers, enc_norm)
        dec_layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, normalize_before)
        self.decoder = TransformerDecoder(dec_layer, num_decoder_layers, nn.LayerNorm(d_model), return_intermediate_dec)
        xavier_init_matrices(self)
        self.d_model = d_model

    def forward(self, src: Tensor, mask: Optional[Tensor], query_embed: Tensor, pos_embed: Tensor):
        b, c, h, w = src.shape
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        query_embed = query_embed.unsqueeze(1).repeat(1, b, 1)
        if mask is not None:
            mask = mask.flatten(1)
        memory = self.encoder(src, src_key_padding_mask=mask, pos=pos_embed)
        hs = self.decoder(
            torch.zeros_like(query_embed), memory, memory_key_padding_mask=mask, pos=pos_embed, query_pos=query_embed
        )
        return hs.transpose(1, 2), memory.permute(1, 2, 0).view(b, c, h, w)
