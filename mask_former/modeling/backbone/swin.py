"""Swin Transformer backbone (Liu et al. 2021, "Hierarchical Vision Transformer using Shifted
Windows"), with the module layout and numerics of upstream Mask2Former's ``D2SwinTransformer`` so
that its checkpoints load unchanged and give the same features.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import BACKBONE_REGISTRY, Backbone, ShapeSpec
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from ...layers import Linear
from ..padding import padding_to_multiple

# Added to the attention logits between tokens of one shifted window that came from different
# regions of the feature map; upstream uses this finite value rather than -inf.
SHIFTED_WINDOW_MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """
    Splits a feature map into non-overlapping square windows.

    Args:
        x (`torch.Tensor` of shape `[B, H, W, C]`): H and W are multiples of `window_size`.
        window_size (`int`): side of a window.

    Returns:
        `torch.Tensor` of shape `[B * num_windows, window_size * window_size, C]`, windows in
        row-major order within each image.
    """
    batch, height, width, channels = x.shape
    x = x.view(
        batch, height // window_size, window_size, width // window_size, window_size, channels
    )
    # An explicit copy then a view: what reshape does here anyway, without its is-it-a-view guards on
    # symbolic sizes under torch.export.
    windows = x.permute(0, 1, 3, 2, 4, 5).clone(memory_format=torch.contiguous_format)
    return windows.view(-1, window_size * window_size, channels)


def window_merge(windows: torch.Tensor, window_size: int, batch: int, height: int, width: int) -> torch.Tensor:
    """
    Inverse of `window_partition`.

    Args:
        windows (`torch.Tensor` of shape `[B * num_windows, window_size * window_size, C]`).
        window_size (`int`): side of a window.
        batch, height, width (`int`): batch and size of the feature maps the windows came from
            (given rather than inferred, which keeps the sizes plain expressions under torch.export).

    Returns:
        `torch.Tensor` of shape `[B, height, width, C]`.
    """
    channels = windows.shape[-1]
    x = windows.view(
        batch, height // window_size, width // window_size, window_size, window_size, channels
    )
    merged = x.permute(0, 1, 3, 2, 4, 5).clone(memory_format=torch.contiguous_format)
    return merged.view(batch, height, width, channels)


def relative_position_index(window_size: int) -> torch.Tensor:
    """
    Index into the relative position bias table for every (query, key) pair of a window.

    Args:
        window_size (`int`): side of a window, `w`.

    Returns:
        `torch.LongTensor` of shape `[w * w, w * w]`: for query `(qi, qj)` and key `(ki, kj)`,
        `(qi - ki + w - 1) * (2w - 1) + (qj - kj + w - 1)`.
    """
    rows, cols = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    delta_rows = rows[:, None] - rows[None, :] + window_size - 1
    delta_cols = cols[:, None] - cols[None, :] + window_size - 1
    return delta_rows * (2 * window_size - 1) + delta_cols


def shifted_window_mask(
    height: int, width: int, window_size: int, shift_size: int, device: torch.device, dtype
) -> torch.Tensor:
    """
    Attention mask of the shifted windows. After the cyclic shift, a window at the bottom or right
    edge holds tokens from up to three separate regions along each axis; tokens of different
    regions must not attend to each other.

    Args:
        height, width (`int`): padded feature map size, multiples of `window_size`.
        window_size, shift_size (`int`): window side and cyclic shift.
        device, dtype: of the returned mask.

    Returns:
        `torch.Tensor` of shape `[num_windows, window_size**2, window_size**2]`: 0 between tokens
        of one region, `SHIFTED_WINDOW_MASK_VALUE` otherwise.
    """

    def region_along(size: int) -> torch.Tensor:
        positions = torch.arange(size, device=device)
        return (positions >= size - window_size).long() + (positions >= size - shift_size).long()

    regions = region_along(height)[:, None] * 3 + region_along(width)[None, :]
    window_regions = window_partition(regions[None, :, :, None], window_size).squeeze(-1)
    differs = window_regions[:, None, :] != window_regions[:, :, None]
    mask = torch.zeros(differs.shape, device=device, dtype=dtype)
    return mask.masked_fill(differs, SHIFTED_WINDOW_MASK_VALUE)


class Mlp(nn.Module):
    """Two-layer GELU perceptron of a Swin block."""

    def __init__(self, dim: int, hidden_dim: int, drop: float):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: `[..., dim]` -> `[..., dim]`."""
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class WindowAttention(nn.Module):
    """
    Multi-head self-attention inside windows, with a learned relative position bias.

    Args:
        dim (`int`): channels of the tokens.
        window_size (`int`): side of a window.
        num_heads (`int`): attention heads; must divide `dim`.
        qkv_bias (`bool`): whether the query/key/value projection has a bias.
        qk_scale (`float`, *optional*): logit scale; `head_dim ** -0.5` when None.
        attn_drop, proj_drop (`float`): dropout on the attention weights and on the output.
    """

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool,
        qk_scale: Optional[float],
        attn_drop: float,
        proj_drop: float,
    ):
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> torch.Tensor:
        """Returns the bias `[num_heads, w*w, w*w]` added to the attention logits."""
        tokens = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(tokens, tokens, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x (`torch.Tensor` of shape `[B * num_windows, w*w, dim]`): tokens of each window.
            mask (`torch.Tensor` of shape `[num_windows, w*w, w*w]`, *optional*): added to the
                logits of every image's windows.

        Returns:
            `torch.Tensor` of shape `[B * num_windows, w*w, dim]`.
        """
        num_windows_total, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(
            num_windows_total, tokens, 3, self.num_heads, channels // self.num_heads
        )
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (query * self.scale) @ key.transpose(-2, -1)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(-1, num_windows, self.num_heads, tokens, tokens)
            attn = (attn + mask[None, :, None]).view(-1, self.num_heads, tokens, tokens)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ value).transpose(1, 2).reshape(num_windows_total, tokens, channels)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    """
    Pre-norm transformer block with (shifted) window attention. The feature map is zero-padded to
    a multiple of the window size after `norm1`; the padding takes part in the attention as upstream
    does, and is cropped off afterwards.

    Args:
        dim (`int`): channels.
        num_heads (`int`): attention heads.
        window_size (`int`): side of a window.
        shift_size (`int`): cyclic shift of the windows, 0 for none; below `window_size`.
        mlp_ratio (`float`): hidden width of the MLP over `dim`.
        qkv_bias, qk_scale: see `WindowAttention`.
        drop, attn_drop (`float`): dropout rates.
        drop_path (`float`): stochastic depth rate of both residual branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: Optional[float],
        drop: float,
        attn_drop: float,
        drop_path: float,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size={shift_size} must be in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = StochasticDepth(drop_path, mode="row")
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(
        self, x: torch.Tensor, height: int, width: int, attn_mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """
        Args:
            x (`torch.Tensor` of shape `[B, height * width, dim]`): tokens in row-major order.
            height, width (`int`): feature map size.
            attn_mask (`torch.Tensor` of shape `[num_windows, w*w, w*w]`, *optional*): the
                `shifted_window_mask` of the padded map; used only when this block shifts.

        Returns:
            `torch.Tensor` of shape `[B, height * width, dim]`.
        """
        batch, _, channels = x.shape
        windows = self.norm1(x).view(batch, height, width, channels)
        size = self.window_size
        windows = F.pad(windows, (0, 0, 0, padding_to_multiple(width, size), 0, padding_to_multiple(height, size)))
        padded_height, padded_width = windows.shape[1:3]
        shift = self.shift_size
        if shift:
            windows = torch.roll(windows, shifts=(-shift, -shift), dims=(1, 2))
        windows = self.attn(window_partition(windows, size), mask=attn_mask if shift else None)
        windows = window_merge(windows, size, batch, padded_height, padded_width)
        if shift:
            windows = torch.roll(windows, shifts=(shift, shift), dims=(1, 2))
        attended = windows[:, :height, :width, :]
        if torch.compiler.is_exporting():
            # Whether the crop is a view (no padding) is a guard on the symbolic sizes; a copy is not.
            attended = attended.clone(memory_format=torch.contiguous_format)
        attended = attended.reshape(batch, height * width, channels)
        x = x + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """
    Halves the resolution and doubles the channels: concatenates each 2x2 neighbourhood (in the
    order (0, 0), (1, 0), (0, 1), (1, 1) as (row, col) offsets), normalizes and projects
    `4 * dim -> 2 * dim`. Odd sizes are zero-padded at the bottom/right first.

    Args:
        dim (`int`): input channels.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """`x`: `[B, height * width, dim]` -> `[B, ceil(height/2) * ceil(width/2), 2 * dim]`."""
        batch, _, channels = x.shape
        padding = (0, 0, 0, padding_to_multiple(width, 2), 0, padding_to_multiple(height, 2))
        x = F.pad(x.view(batch, height, width, channels), padding)
        x = torch.cat(
            [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1
        )
        return self.reduction(self.norm(x.view(batch, -1, 4 * channels)))


class SwinStage(nn.Module):
    """
    One resolution of the Swin Transformer: `depth` blocks alternating plain and shifted windows,
    then an optional `PatchMerging`.

    Args:
        dim (`int`): channels.
        depth (`int`): number of blocks.
        window_size (`int`): side of a window; shifted blocks shift by `window_size // 2`.
        drop_path (`Sequence[float]`): stochastic depth rate of each block.
        downsample (`bool`): whether to end with a `PatchMerging`.
        use_checkpoint (`bool`): recompute each block in the backward pass to save memory.
        block_kwargs: the remaining `SwinTransformerBlock` arguments.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        window_size: int,
        drop_path: Sequence[float],
        downsample: bool,
        use_checkpoint: bool,
        **block_kwargs,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                window_size=window_size,
                shift_size=self.shift_size if index % 2 else 0,
                drop_path=drop_path[index],
                **block_kwargs,
            )
            for index in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def attention_mask(self, x: torch.Tensor, height: int, width: int) -> Optional[torch.Tensor]:
        """The shifted-window mask for a `height x width` map, or None if no block shifts."""
        if not any(block.shift_size for block in self.blocks):
            return None
        size = self.window_size
        return shifted_window_mask(
            math.ceil(height / size) * size,
            math.ceil(width / size) * size,
            size,
            self.shift_size,
            device=x.device,
            dtype=x.dtype,
        )

    def forward(
        self, x: torch.Tensor, height: int, width: int
    ) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
        """
        Args:
            x (`torch.Tensor` of shape `[B, height * width, dim]`).
            height, width (`int`): feature map size.

        Returns:
            `(stage_output, next_input, next_height, next_width)`: the blocks' output
            `[B, height * width, dim]` and the downsampled input of the next stage (the output
            itself, at the same size, when there is no downsampling).
        """
        attn_mask = self.attention_mask(x, height, width)
        for block in self.blocks:
            if self.use_checkpoint and self.training:
                x = checkpoint(block, x, height, width, attn_mask, use_reentrant=False)
            else:
                x = block(x, height, width, attn_mask)
        if self.downsample is None:
            return x, x, height, width
        return x, self.downsample(x, height, width), (height + 1) // 2, (width + 1) // 2


class PatchEmbed(nn.Module):
    """
    Non-overlapping patch embedding: zero-pads the image at the bottom/right to a multiple of the
    patch size, projects each patch with a strided convolution and optionally normalizes.

    Args:
        patch_size (`int`): side of a patch.
        in_chans (`int`): image channels.
        embed_dim (`int`): output channels.
        patch_norm (`bool`): whether to apply a LayerNorm to the embeddings.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x`: `[B, in_chans, H, W]` -> `[B, embed_dim, ceil(H/patch), ceil(W/patch)]`."""
        height, width = x.shape[-2:]
        size = self.patch_size
        x = self.proj(F.pad(x, (0, padding_to_multiple(width, size), 0, padding_to_multiple(height, size))))
        if self.norm is not None:
            x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


def check_swin_arguments(
    num_features: Sequence[int],
    depths: Sequence[int],
    num_heads: Sequence[int],
    out_features: Sequence[str],
    stage_names: Sequence[str],
) -> None:
    """Raises a ValueError naming the config key of an inconsistent Swin argument."""
    if len(num_heads) != len(depths):
        raise ValueError(
            f"MODEL.SWIN.NUM_HEADS={list(num_heads)} needs one entry per stage of "
            f"MODEL.SWIN.DEPTHS={list(depths)}"
        )
    for channels, heads in zip(num_features, num_heads):
        if channels % heads:
            raise ValueError(
                f"MODEL.SWIN.NUM_HEADS={list(num_heads)}: {heads} heads do not divide a stage's "
                f"{channels} channels (MODEL.SWIN.EMBED_DIM * 2**stage)"
            )
    unknown = sorted(set(out_features) - set(stage_names))
    if unknown:
        raise ValueError(
            f"MODEL.SWIN.OUT_FEATURES has {unknown}; this Swin Transformer has {stage_names}"
        )


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(Backbone):
    """
    Swin Transformer backbone as a detectron2 `Backbone`. Stage `i` outputs `res{i+2}` with
    `embed_dim * 2**i` channels at stride `patch_size * 2**i`, each normalized by its own
    LayerNorm `norm{i}`. Any input size works: maps are padded internally and cropped back.

    Args:
        in_chans (`int`): image channels.
        pretrain_img_size (`int`): image size of pre-training; sets the size of the absolute
            position embedding, which is interpolated to each input.
        patch_size (`int`): side of the embedding patches.
        embed_dim (`int`): channels of the first stage.
        depths (`Sequence[int]`): blocks per stage.
        num_heads (`Sequence[int]`): attention heads per stage.
        window_size (`int`): side of the attention windows.
        mlp_ratio (`float`): hidden width of the block MLPs over their channels.
        qkv_bias (`bool`): whether the query/key/value projections have a bias.
        qk_scale (`float`, *optional*): attention logit scale; `head_dim ** -0.5` when None.
        drop_rate, attn_drop_rate (`float`): dropout rates.
        drop_path_rate (`float`): stochastic depth rate of the last block; it rises linearly from
            0 over all blocks.
        ape (`bool`): whether to add a learned absolute position embedding.
        patch_norm (`bool`): whether to normalize the patch embeddings.
        out_features (`Sequence[str]`): stages to return, among `res2` ... `res{len(depths)+1}`.
        use_checkpoint (`bool`): gradient checkpointing of each block in training.
    """

    @configurable
    def __init__(
        self,
        *,
        in_chans: int = 3,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        use_checkpoint: bool = False,
    ):
        super().__init__()
        num_stages = len(depths)
        self.num_features = [embed_dim * 2**index for index in range(num_stages)]
        stage_names = [f"res{index + 2}" for index in range(num_stages)]
        check_swin_arguments(self.num_features, depths, num_heads, out_features, stage_names)
        self.in_chans = in_chans
        self.ape = ape
        self._out_features = list(out_features)
        self._out_feature_channels = dict(zip(stage_names, self.num_features))
        self._out_feature_strides = {
            name: patch_size * 2**index for index, name in enumerate(stage_names)
        }

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        if ape:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)

        block_drop_paths = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        first_blocks = [sum(depths[:index]) for index in range(num_stages + 1)]
        self.layers = nn.ModuleList(
            SwinStage(
                self.num_features[index],
                depths[index],
                window_size,
                drop_path=block_drop_paths[first_blocks[index] : first_blocks[index + 1]],
                downsample=index < num_stages - 1,
                use_checkpoint=use_checkpoint,
                num_heads=num_heads[index],
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
            )
            for index in range(num_stages)
        )
        # Every stage has its output norm, as in upstream checkpoints, even if it is not returned.
        for index, channels in enumerate(self.num_features):
            self.add_module(f"norm{index}", nn.LayerNorm(channels))

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        swin = cfg.MODEL.SWIN
        return {
            "in_chans": input_shape.channels,
            "pretrain_img_size": swin.PRETRAIN_IMG_SIZE,
            "patch_size": swin.PATCH_SIZE,
            "embed_dim": swin.EMBED_DIM,
            "depths": swin.DEPTHS,
            "num_heads": swin.NUM_HEADS,
            "window_size": swin.WINDOW_SIZE,
            "mlp_ratio": swin.MLP_RATIO,
            "qkv_bias": swin.QKV_BIAS,
            "qk_scale": swin.QK_SCALE,
            "drop_rate": swin.DROP_RATE,
            "attn_drop_rate": swin.ATTN_DROP_RATE,
            "drop_path_rate": swin.DROP_PATH_RATE,
            "ape": swin.APE,
            "patch_norm": swin.PATCH_NORM,
            "out_features": swin.OUT_FEATURES,
            "use_checkpoint": swin.USE_CHECKPOINT,
        }

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """Patch embedding (plus absolute position embedding): `[B, C, H, W]` -> tokens
        `[B, h * w, embed_dim]`, `h`, `w`."""
        x = self.patch_embed(x)
        height, width = x.shape[-2:]
        if self.ape:
            x = x + F.interpolate(self.absolute_pos_embed, size=(height, width), mode="bicubic")
        return self.pos_drop(x.flatten(2).transpose(1, 2)), height, width

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x (`torch.Tensor` of shape `[B, in_chans, H, W]`): normalized images of any size.

        Returns:
            `dict[str, torch.Tensor]`: for each name in `out_features`, `res{i+2}` of shape
            `[B, embed_dim * 2**i, ceil(H / stride), ceil(W / stride)]`.
        """
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"D2SwinTransformer takes images [N, {self.in_chans}, H, W]; got {tuple(x.shape)}"
            )
        x, height, width = self.embed(x)
        outputs = {}
        for index, stage in enumerate(self.layers):
            name = f"res{index + 2}"
            stage_output, x, next_height, next_width = stage(x, height, width)
            if name in self._out_features:
                stage_output = getattr(self, f"norm{index}")(stage_output)
                outputs[name] = (
                    stage_output.view(-1, height, width, self.num_features[index])
                    .permute(0, 3, 1, 2)
                    .contiguous()
                )
            height, width = next_height, next_width
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32

