"""Fast path: a convolution followed by a frozen batch norm, run as one convolution.

Reference: detectron2's ``Conv2d`` with a ``FrozenBatchNorm2d`` norm, the convolution then the norm
(:func:`conv_then_norm`). Fast path: :class:`FrozenBNConv2d`, the norm folded into the convolution's weights.
:func:`fold_frozen_batch_norm` makes a backbone's convolutions fast-path ones at build time
(``MODEL.MASK_FORMER.FOLD_FROZEN_BN``); :func:`folds_frozen_batch_norm` picks, at build time and in each call.

A frozen batch norm is a fixed per-channel affine map ``y = x * scale + shift``, so
``norm(conv(x, W) + b) == conv(x, W * scale, b * scale + shift)``. detectron2 runs it as a separate pass over
the conv's output: two elementwise passes in training (and one more in the backward), one in eval. Folding it
into the weights, which are tiny next to the activations, saves those passes; the results are the same up to
float rounding. Parameters, buffers and state-dict keys are untouched.
"""
import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import Tensor, nn
from torch.nn import functional as F

from ...compat import tensor_version
from ...layers import capturing_graph

__all__ = ["FrozenBNConv2d", "conv_then_norm", "fold_frozen_batch_norm", "folds_frozen_batch_norm", "frozen_bn_affine"]


FROZEN_BN_BUFFERS = ("weight", "bias", "running_mean", "running_var")


def frozen_bn_affine(norm: FrozenBatchNorm2d):
    """``(scale, shift)`` ``[C]`` of the frozen batch norm's map ``x * scale + shift``, as detectron2 computes them."""
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    return scale, norm.bias - norm.running_mean * scale


def folds_frozen_batch_norm(conv: Conv2d) -> bool:
    """Whether ``conv`` runs its norm folded into its weights: where the norm is a ``FrozenBatchNorm2d``, a fixed
    map (a trainable norm changes in training, and its statistics with the batch)."""
    return type(conv.norm) is FrozenBatchNorm2d


def conv_then_norm(conv: Conv2d, x: Tensor) -> Tensor:
    """The reference: detectron2's ``Conv2d`` forward, the convolution then its norm (and activation)."""
    return Conv2d.forward(conv, x)


class FrozenBNConv2d(Conv2d):
    """detectron2's ``Conv2d`` whose ``norm`` is a ``FrozenBatchNorm2d``, with the norm folded into the convolution.
    Built from such a conv by :func:`fold_frozen_batch_norm`. If its ``norm`` is later replaced by another kind
    (a trainable batch norm, say), it runs as a plain ``Conv2d``.

    Where no graph is recorded, the folded weight and bias are kept and reused until the weight or a norm buffer
    changes (in place, as ``load_state_dict`` does, or by ``.to()``): folding each call would cost a pass over the
    weights, as much as the pass over the output it saves at batch 1. The kept copy is one more set of the conv
    weights in memory; it is dropped on ``train()``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not folds_frozen_batch_norm(self):
            return conv_then_norm(self, x)
        weight, bias = self._folded_weight_and_bias()
        x = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return x if self.activation is None else self.activation(x)

    def train(self, mode: bool = True):
        self.__dict__.pop("_folded", None)
        return super().train(mode)

    def _folded_weight_and_bias(self):
        sources = [self.weight, self.bias, *(getattr(self.norm, name) for name in FROZEN_BN_BUFFERS)]
        sources = [t for t in sources if t is not None]
        records_graph = torch.is_grad_enabled() and any(t.requires_grad for t in sources)
        # Inference tensors have no version counter; a traced graph folds the weights itself.
        if records_graph or capturing_graph() or any(t.is_inference() for t in sources):
            return self._fold()
        key = tuple((t.data_ptr(), tensor_version(t), t.dtype, t.device) for t in sources)
        cached = self.__dict__.get("_folded")
        if cached is None or cached[0] != key:
            self.__dict__["_folded"] = cached = (key, *self._fold())
        return cached[1:]

    def _fold(self):
        scale, shift = frozen_bn_affine(self.norm)
        weight = self.weight * scale.view(-1, 1, 1, 1).to(self.weight.dtype)
        bias = shift if self.bias is None else self.bias * scale + shift
        return weight, bias.to(weight.dtype)


def fold_frozen_batch_norm(module: nn.Module) -> nn.Module:
    """Make, in place, every detectron2 ``Conv2d`` in ``module`` that :func:`folds_frozen_batch_norm` picks a
    :class:`FrozenBNConv2d`; its parameters, buffers, names and memory format stay as they are. Returns
    ``module``."""
    for child in module.modules():
        # Exactly Conv2d: a subclass may have a forward of its own.
        if type(child) is Conv2d and folds_frozen_batch_norm(child):
            # A subclass that only overrides forward: every attribute (parameters, hooks, training flag) stays.
            child.__class__ = FrozenBNConv2d
    return module
