"""Opt-in reduced-precision variants of an ONNX export (``tools/export_model.py --quantize NAME``).

``int8``: every matrix product whose second operand is a weight (the linear layers of the pixel decoder's
encoder, of the transformer decoder and of the prediction heads) becomes a dynamically quantized one: the
weights stored as int8, one scale per output channel, the activations quantized to uint8 per tensor at run
time (standard ONNX ``DynamicQuantizeLinear`` and ``MatMulInteger``, which onnxruntime fuses). Written by
onnxruntime's own quantization tool. Convolutions, products of two activations (attention, mask logits) and
the post-processing stay float32: onnxruntime's integer convolution was slower than its float one on the
R50 model (a scratch run). On the golden fixtures the semantic argmax and panoptic categories agree with
upstream's float32 outputs on 99.77% of the pixels or more (``benchmarks/export_agreement.py --quantize int8``;
``tests/test_export.py`` asserts the bfloat16 model's bounds, 99% and 98%).
"""
from pathlib import Path
from typing import Callable, Dict


def quantize_int8(path: Path) -> None:
    """Rewrite the ONNX model at ``path`` with int8 weights in its weight matrix products (see the module)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(path), str(path), op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
        extra_options={"MatMulConstBOnly": True},
    )


QUANTIZATIONS: Dict[str, Callable[[Path], None]] = {"int8": quantize_int8}
"""``--quantize`` name -> the rewrite of a written ONNX model file."""
