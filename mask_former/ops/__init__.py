"""Multi-scale deformable attention: ``ms_deform_attn`` and the ``MSDeformAttn`` module."""
from .ms_deform_attn_ref import ms_deform_attn_pytorch


def ms_deform_attn(value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights):
    """Multi-scale deformable attention; shapes as in :func:`ms_deform_attn_pytorch`."""
    return ms_deform_attn_pytorch(
        value, value_spatial_shapes, value_level_start_index, sampling_locations, attention_weights
    )


__all__ = ["ms_deform_attn", "ms_deform_attn_pytorch"]
