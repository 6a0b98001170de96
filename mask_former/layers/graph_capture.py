"""When the model runs eagerly and when it is being recorded into a graph: the conditions that the inference-only
fast paths, and the operators with an export form, test."""
import torch
from torch import Tensor, nn

__all__ = ["capturing_graph", "eager_cpu_inference"]


def capturing_graph() -> bool:
    """Whether the model runs to be recorded into a graph: by torch.export, or by the TorchScript tracer (the
    ONNX exporter). Such a graph holds neither data-dependent shapes nor values kept between calls."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def eager_cpu_inference(module: nn.Module, x: Tensor) -> bool:
    """Whether ``module`` runs eager CPU inference on ``x``: eval mode, no autograd, no graph captured for export
    (checked first: under torch.export a test of ``x`` would become a guard of the graph). The condition of the
    inference-only fast paths, which may drop what training or an exported graph needs."""
    return not capturing_graph() and x.device.type == "cpu" and not module.training and not torch.is_grad_enabled()
