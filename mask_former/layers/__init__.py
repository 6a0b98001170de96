"""Building blocks shared by the operators (:mod:`mask_former.ops`) and the models (:mod:`mask_former.modeling`),
below both:

- :mod:`.graph_capture`: whether the model runs eagerly or is being recorded into a graph
  (:func:`~.graph_capture.capturing_graph`, :func:`~.graph_capture.eager_cpu_inference`), the conditions of the
  fast paths and of the operators' export forms.
- :mod:`.onednn_linear`: :class:`~.onednn_linear.Linear`, the models' ``nn.Linear``, and ``sem_seg``'s products
  in float32 CPU inference on oneDNN's matrix product (a fast path; reference: ``F.linear`` and ``torch.mm``).
"""
from .graph_capture import capturing_graph, eager_cpu_inference
from .onednn_linear import Linear

__all__ = ["Linear", "capturing_graph", "eager_cpu_inference"]
