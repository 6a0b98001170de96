"""The Triton kernel of multi-scale deformable attention against the PyTorch reference, forward and every
gradient, on the CPU in Triton's interpreter.

``TRITON_INTERPRET=1`` must be set before Triton is imported, so the kernel runs in one subprocess (the rest of
the suite keeps compiled Triton, e.g. for torch.compile) through the dispatch with
``MASK_FORMER_DEFORM_ATTN=triton``, self-check included; the comparisons run here, each case a test. Shapes are
tiny: the interpreter runs each program in numpy. On a GPU, the same cases run compiled.
"""
import importlib.util
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mask_former.ops import IMPLEMENTATION_ENV, SELF_CHECK_ENV, ms_deform_attn_pytorch
from test_ms_deform_attn import (
    ODD_LEVELS,
    TOLERANCES,
    assert_close_relative,
    assert_matches_reference,
    forward_backward,
    make_inputs,
)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")
READY_TRITON = "Triton compiles its kernel on first use"
REPO_ROOT = Path(__file__).resolve().parents[1]


def border_inputs(dtype=torch.float32):
    """Every half pixel from x = -2.5 to W + 2 on maps of power-of-two sizes (computed exactly by both): corners
    on the borders, the x = -1 and x = W edges and points fully outside (as in test_ms_deform_attn)."""
    level_shapes = [(4, 8), (2, 4)]
    steps = torch.arange(-4, 2 * 8 + 6, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(steps, steps, indexing="ij")
    grid = torch.stack([grid_x.flatten(), grid_y.flatten()], -1) / 16
    num_queries = grid.shape[0]
    value, shapes, starts, _, weights = make_inputs(
        level_shapes, heads=1, channels=4, queries=num_queries, points=1, batch=1, dtype=dtype
    )
    locations = grid.view(1, num_queries, 1, 1, 1, 2).expand(1, -1, -1, len(level_shapes), -1, -1)
    return value, shapes, starts, locations.to(dtype).contiguous(), weights


def small(dtype, **sizes):
    return make_inputs(ODD_LEVELS, **{"heads": 3, "channels": 5, "queries": 20, "points": 2, "dtype": dtype, **sizes})


CASES = {
    "float32": lambda: small(torch.float32),
    "float64": lambda: small(torch.float64, batch=1),
    "float16": lambda: small(torch.float16, batch=1),
    "bfloat16": lambda: small(torch.bfloat16, batch=1),
    "borders": border_inputs,
    "one_channel_one_level": lambda: make_inputs([(3, 2)], heads=2, channels=1, queries=5, points=4),
    "no_queries": lambda: small(torch.float32, queries=0),
}

RUN_IN_INTERPRETER = textwrap.dedent("""
    import sys
    import torch
    from mask_former.ops import choose_implementation, ms_deform_attn
    from test_ms_deform_attn import forward_backward

    cases = torch.load(sys.argv[1])
    results = {}
    for name, (inputs, grad_output) in cases.items():
        results[name] = {
            "choice": choose_implementation(inputs[0]),
            "results": forward_backward(ms_deform_attn, *inputs, grad_output),
        }
    torch.save(results, sys.argv[2])
""")


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """``{case: (inputs, grad_output, {"choice", "results"})}``, the results from the Triton kernel in the
    interpreter."""
    folder = tmp_path_factory.mktemp("triton")
    cases = {}
    for name, build in CASES.items():
        inputs = build()
        generator = torch.Generator().manual_seed(1)
        n, num_queries, heads = inputs[3].shape[:3]
        grad_output = torch.randn(n, num_queries, heads * inputs[0].shape[-1], generator=generator)
        cases[name] = inputs, grad_output.to(inputs[0].dtype)
    torch.save(cases, folder / "cases.pt")
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        IMPLEMENTATION_ENV: "triton",
        SELF_CHECK_ENV: "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "tests")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", RUN_IN_INTERPRETER, str(folder / "cases.pt"), str(folder / "results.pt")],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    results = torch.load(folder / "results.pt")
    return {name: (*cases[name], results[name]) for name in CASES}


def test_env_triton_runs_the_kernel_on_cpu_tensors_in_the_interpreter_after_its_self_check(interpreted):
    for name, (_, _, run) in interpreted.items():
        assert run["choice"] == ("triton", f"{READY_TRITON}; self-checked against the reference"), name


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(interpreted, name):
    inputs, grad_output, run = interpreted[name]
    dtype = inputs[0].dtype
    as_double = [tensor.double() if tensor.is_floating_point() else tensor for tensor in inputs]
    expected = forward_backward(ms_deform_attn_pytorch, *as_double, grad_output.double())
    results = run["results"]
    assert [tensor.dtype for tensor in results] == [dtype] * 4
    for what, actual, wanted in zip(["output", "value", "locations", "weights"], results, expected):
        assert actual.shape == wanted.shape
        assert_close_relative(actual, wanted, TOLERANCES[dtype], f"{name} {what}")


def kernel_signature(kernel, value_type: str):
    """Triton's signature of ``kernel`` for values of ``value_type`` (e.g. "bf16"): value, output and its gradient
    in that type, shapes int64, locations, weights and their gradients float32, sizes int32."""
    signature = {}
    for name in inspect.signature(kernel.fn).parameters:
        if name in ("value_ptr", "output_ptr", "grad_output_ptr"):
            signature[name] = f"*{value_type}"
        elif name in ("shapes_ptr", "starts_ptr"):
            signature[name] = "*i64"
        elif name.endswith("_ptr"):
            signature[name] = "*fp32"
        else:
            signature[name] = "constexpr" if name in ("M", "D", "BLOCK_ROWS", "BLOCK_D") else "i32"
    return signature


@pytest.mark.parametrize("kernel", ["_forward_kernel", "_backward_kernel"])
def test_kernels_compile_for_a_gpu_without_one(kernel):
    """Triton's compiler, its own ptxas included, builds the kernels for an A100 (bfloat16 values, the Mask2Former
    shapes) on a machine without a GPU: the compiled path is more than the interpreter's."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from mask_former.ops import ms_deform_attn_triton

    function = getattr(ms_deform_attn_triton, kernel)
    tile = ms_deform_attn_triton.TILES["forward" if kernel == "_forward_kernel" else "backward"]
    constexprs = {"M": 8, "D": 32, "BLOCK_ROWS": tile // 32, "BLOCK_D": 32}
    source = ASTSource(fn=function, signature=kernel_signature(function, "bf16"), constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 80, 32))
    assert compiled.asm["cubin"]


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@requires_gpu
@pytest.mark.parametrize("channels", [32, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_compiled_kernel_matches_reference_on_gpu(dtype, channels):
    from mask_former.ops.ms_deform_attn_triton import ms_deform_attn_triton

    inputs = make_inputs(ODD_LEVELS, heads=3, channels=channels, queries=40, points=4, dtype=dtype, device="cuda")
    assert_matches_reference(inputs, dtype, kernel=ms_deform_attn_triton)


@requires_gpu
def test_compiled_kernel_on_borders_on_gpu():
    from mask_former.ops.ms_deform_attn_triton import ms_deform_attn_triton

    assert_matches_reference([t.cuda() for t in border_inputs()], torch.float32, kernel=ms_deform_attn_triton)
