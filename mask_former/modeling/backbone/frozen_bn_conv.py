"""Convolutions followed by a frozen batch norm, run as one convolution.

A frozen batch norm is a fixed per-channel affine map ``y = x * scale + shift``, so
``norm(conv(x, W) + b) == conv(x, W * scale, b * scale + shift)``. detectron2 runs it as a separate pass over
the conv's output: two elementwise passes in training (and one more in the backward), one in eval. Folding it
into the weights, which are tiny next to the activations, saves those passes; the results are the same up to
float rounding. Parameters, buffers and state-dict keys are untouched.
"""
from torch import Tensor, nn
from torch.nn import functional as F

from detectron2.layers import Conv2d, FrozenBatchNorm2d

__all__ = ["FrozenBNConv2d", "fold_frozen_batch_norm", "frozen_bn_affine"]


def frozen_bn_affine(norm: FrozenBatchNorm2d):
    """``(scale, shift)`` ``[C]`` of the frozen batch norm's map ``x * scale + shift``, as detectron2 computes them."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    return scale, norm.bias - norm.running_mean * scale


class FrozenBNConv2d(Conv2d):
    """detectron2's ``Conv2d`` whose ``norm`` is a ``FrozenBatchNorm2d``, with the norm folded into the convolution.
    Built from such a conv by :func:`fold_frozen_batch_norm`. If its ``norm`` is later replaced by another kind
    (a trainable batch norm, say), it runs as a plain ``Conv2d``."""

    def forward(self, x: Tensor) -> Tensor:
        if type(self.norm) is not FrozenBatchNorm2d:
            return super().forward(x)
        scale, shift = frozen_bn_affine(self.norm)
        weight = self.weight * scale.view(-1, 1, 1, 1).to(self.weight.dtype)
        bias = shift if self.bias is None else self.bias * scale + shift
        x = F.conv2d(x, weight, bias.to(weight.dtype), self.stride, self.padding, self.dilation, self.groups)
        return x if self.activation is None else self.activation(x)


def fold_frozen_batch_norm(module: nn.Module) -> nn.Module:
    """Make, in place, every detectron2 ``Conv2d`` in ``module`` whose ``norm`` is a ``FrozenBatchNorm2d`` a
    :class:`FrozenBNConv2d`; its parameters, buffers, names and memory format stay as they are. Returns
    ``module``."""
    for child in module.modules():
        if type(child) is Conv2d and type(child.norm) is FrozenBatchNorm2d:
            # A subclass that only overrides forward: every attribute (parameters, hooks, training flag) stays.
            child.__class__ = FrozenBNConv2d
    return module
