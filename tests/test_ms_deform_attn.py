"""Multi-scale deformable attention: the dispatch and the self-check (CPU, always run), the fused CPU operator
against the PyTorch reference (skipped without a built ``mask_former._C_cpu``) and the CUDA kernel against it
(skipped without a GPU and a built ``mask_former._C``). The Triton kernel: tests/test_ms_deform_attn_triton.py;
the gather form of export: tests/test_ms_deform_attn_gather.py."""
import functools
import logging
import re

import pytest
import torch

import mask_former.ops as ops
from mask_former.ops import (
    IMPLEMENTATION_ENV,
    SELF_CHECK_ENV,
    choose_implementation,
    is_deterministic,
    ms_deform_attn,
    ms_deform_attn_cpu,
    ms_deform_attn_cuda,
    ms_deform_attn_pytorch,
    set_deterministic,
)
from mask_former.ops.ms_deform_attn_func import CPU_EXTENSION, EXTENSION, load_extension

KERNEL_READY = torch.cuda.is_available() and load_extension() is not None
requires_kernel = pytest.mark.skipif(not KERNEL_READY, reason="needs a CUDA GPU and the built extension mask_former._C")
CPU_OP_READY = load_extension(CPU_EXTENSION) is not None
requires_cpu_op = pytest.mark.skipif(not CPU_OP_READY, reason="needs the built extension mask_former._C_cpu")

ODD_LEVELS = [(7, 9), (5, 3), (3, 5), (1, 1)]
# Relative error allowed, elementwise and against the tensor's largest value (cancellations in the location
# gradients make elementwise relative error meaningless near zero). The reference runs in float64 on the same
# (rounded) inputs; the PyTorch reference itself in float32 is off by about 1e-6 of the largest value.
TOLERANCES = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def make_inputs(
    level_shapes,
    heads=2,
    channels=8,
    queries=6,
    points=3,
    batch=2,
    low=-0.1,
    high=1.1,
    dtype=torch.float32,
    device="cpu",
    seed=0,
):
    """``(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)``; locations are
    uniform in ``[low, high]``, so some fall outside the maps."""
    generator = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(level_shapes, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    levels = len(level_shapes)
    value = torch.randn(batch, int(areas.sum()), heads, channels, generator=generator, dtype=torch.float64)
    locations = torch.rand(batch, queries, heads, levels, points, 2, generator=generator, dtype=torch.float64)
    weights = torch.rand(batch, queries, heads, levels, points, generator=generator, dtype=torch.float64)
    return (
        value.to(device, dtype),
        shapes.to(device),
        starts.to(device),
        (locations * (high - low) + low).to(device, dtype),
        weights.to(device, dtype),
    )


def forward_backward(function, value, shapes, starts, locations, weights, grad_output):
    """``[output, grad_value, grad_sampling_locations, grad_attention_weights]``."""
    leaves = [tensor.detach().requires_grad_() for tensor in (value, locations, weights)]
    output = function(leaves[0], shapes, starts, leaves[1], leaves[2])
    output.backward(grad_output)
    return [output.detach()] + [leaf.grad for leaf in leaves]


def random_grad_output(value, locations, seed=1):
    n, num_queries, heads = locations.shape[:3]
    generator = torch.Generator().manual_seed(seed)
    grad = torch.randn(n, num_queries, heads * value.shape[-1], generator=generator, dtype=torch.float64)
    return grad.to(value.device, value.dtype)


def assert_matches_reference(inputs, dtype, deterministic=False, kernel=None):
    """The kernel (default: CUDA's) in ``dtype`` against the reference in float64 on the same values."""
    grad_output = random_grad_output(inputs[0], inputs[3])
    kernel = kernel or functools.partial(ms_deform_attn_cuda, deterministic=deterministic)
    results = forward_backward(kernel, *inputs, grad_output)
    as_double = [tensor.double() if tensor.is_floating_point() else tensor for tensor in inputs]
    expected = forward_backward(ms_deform_attn_pytorch, *as_double, grad_output.double())
    assert results[0].dtype == dtype and results[1].dtype == dtype
    for name, actual, wanted in zip(["output", "value", "locations", "weights"], results, expected):
        assert_close_relative(actual, wanted, TOLERANCES[dtype], name)


def assert_close_relative(actual, expected, tolerance, name=""):
    expected = expected.double()
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(
        actual.double(), expected, rtol=tolerance, atol=tolerance * scale, msg=lambda message: f"{name}: {message}"
    )


@pytest.fixture(autouse=True)
def fresh_dispatch_state(monkeypatch):
    monkeypatch.delenv(IMPLEMENTATION_ENV, raising=False)
    monkeypatch.delenv(SELF_CHECK_ENV, raising=False)
    ops._log_choice.cache_clear()
    ops.kernel_self_check.cache_clear()
    yield
    set_deterministic(False)
    ops.kernel_self_check.cache_clear()


# CPU: the dispatch.


def without_cpu_op(monkeypatch):
    """Dispatch as if mask_former._C_cpu were not built."""
    real = ops.load_extension
    monkeypatch.setattr(ops, "load_extension", lambda name: None if name == CPU_EXTENSION else real(name))


NOT_BUILT = "the extension mask_former._C_cpu is not built (pip install -e . with a C++ compiler)"


@requires_cpu_op
def test_cpu_inputs_use_the_fused_op():
    inputs = make_inputs(ODD_LEVELS)
    assert choose_implementation(inputs[0]) == (
        "cpu", "CPU inputs and mask_former._C_cpu is built; self-checked against the reference"
    )
    assert torch.equal(ms_deform_attn(*inputs), ms_deform_attn_cpu(*inputs))


def test_cpu_inputs_without_the_op_use_the_reference(monkeypatch):
    without_cpu_op(monkeypatch)
    inputs = make_inputs(ODD_LEVELS)
    assert choose_implementation(inputs[0]) == ("pytorch", NOT_BUILT)
    assert torch.equal(ms_deform_attn(*inputs), ms_deform_attn_pytorch(*inputs))


def test_env_cpu_without_the_op_is_an_error(monkeypatch):
    without_cpu_op(monkeypatch)
    monkeypatch.setenv(IMPLEMENTATION_ENV, "cpu")
    with pytest.raises(RuntimeError, match="_C_cpu is not built"):
        ms_deform_attn(*make_inputs(ODD_LEVELS))


@requires_kernel
def test_env_cpu_on_cuda_inputs_is_an_error(monkeypatch):
    monkeypatch.setenv(IMPLEMENTATION_ENV, "cpu")
    with pytest.raises(RuntimeError, match="inputs are on cuda"):
        ms_deform_attn(*make_inputs(ODD_LEVELS, device="cuda"))


class CudaLikeValue:
    """Stands for a CUDA tensor where there is no GPU: only its device is read before the probe."""

    device = torch.device("cuda", 0)


def gpu_without_kernel_image(monkeypatch):
    """A GPU that the built mask_former._C has no code for, and no Triton."""
    ops.cuda_kernel_image_problem.cache_clear()
    monkeypatch.setattr(ops, "load_extension", lambda name: object())
    monkeypatch.setattr(ops, "triton_interpreted", lambda: None)

    def probe(device):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(ops, "_run_cuda_probe", probe)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (12, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "A GPU from the future")


def test_gpu_without_kernel_image_falls_back_to_the_reference_with_the_reason(monkeypatch):
    gpu_without_kernel_image(monkeypatch)
    name, reason = choose_implementation(CudaLikeValue())
    ops.cuda_kernel_image_problem.cache_clear()
    assert name == "pytorch"
    assert "no kernel image for A GPU from the future (sm_120)" in reason
    assert "TORCH_CUDA_ARCH_LIST=12.0" in reason


def test_gpu_without_kernel_image_is_an_error_when_the_kernel_is_forced(monkeypatch):
    gpu_without_kernel_image(monkeypatch)
    monkeypatch.setenv(IMPLEMENTATION_ENV, "cuda")
    with pytest.raises(RuntimeError, match="MASK_FORMER_DEFORM_ATTN=cuda but .* no kernel image"):
        choose_implementation(CudaLikeValue())
    ops.cuda_kernel_image_problem.cache_clear()


def test_other_cuda_errors_of_the_probe_are_not_hidden(monkeypatch):
    gpu_without_kernel_image(monkeypatch)

    def probe(device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(ops, "_run_cuda_probe", probe)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        choose_implementation(CudaLikeValue())
    ops.cuda_kernel_image_problem.cache_clear()


def test_model_runs_without_the_cpu_op(monkeypatch):
    """The package works with the extension absent: a Mask2Former pixel decoder layer trains on the reference."""
    from mask_former.ops.ms_deform_attn_module import MSDeformAttn

    without_cpu_op(monkeypatch)
    torch.manual_seed(0)
    layer = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    shapes = torch.tensor([(4, 5), (2, 3)])
    starts = torch.tensor([0, 20])
    source = torch.randn(2, 26, 16)
    reference_points = torch.rand(2, 26, 2, 2)
    layer(source, reference_points, source, shapes, starts).sum().backward()
    assert choose_implementation(source)[0] == "pytorch"
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_env_forces_the_reference(monkeypatch):
    monkeypatch.setenv(IMPLEMENTATION_ENV, "pytorch")
    value = make_inputs(ODD_LEVELS)[0]
    assert choose_implementation(value) == ("pytorch", f"{IMPLEMENTATION_ENV}=pytorch")
    if torch.cuda.is_available():
        assert choose_implementation(value.cuda())[0] == "pytorch"


def test_env_cuda_on_cpu_inputs_is_an_error(monkeypatch):
    monkeypatch.setenv(IMPLEMENTATION_ENV, "cuda")
    with pytest.raises(RuntimeError, match="inputs are on cpu"):
        ms_deform_attn(*make_inputs(ODD_LEVELS))


def test_env_unknown_value_is_an_error(monkeypatch):
    monkeypatch.setenv(IMPLEMENTATION_ENV, "tpu")
    with pytest.raises(ValueError, match=IMPLEMENTATION_ENV):
        ms_deform_attn(*make_inputs(ODD_LEVELS))


CUDA_NOT_BUILT = "the extension mask_former._C is not built (FORCE_CUDA=1 pip install -e .)"
NOT_CHECKED = f"not self-checked ({SELF_CHECK_ENV}=0)"


def gpu_without_cuda_extension(monkeypatch, triton_installed=True):
    """Dispatch as on a GPU machine where mask_former._C is not built; no self-check (there is no GPU here)."""
    real = ops.load_extension
    monkeypatch.setattr(ops, "load_extension", lambda name: None if name == EXTENSION else real(name))
    monkeypatch.setattr(ops, "triton_interpreted", lambda: False if triton_installed else None)
    monkeypatch.setenv(SELF_CHECK_ENV, "0")


def test_cuda_inputs_without_the_extension_use_triton(monkeypatch):
    gpu_without_cuda_extension(monkeypatch)
    assert choose_implementation(CudaLikeValue()) == (
        "triton", f"{CUDA_NOT_BUILT}; Triton compiles its kernel on first use; {NOT_CHECKED}"
    )


def test_cuda_inputs_without_kernel_image_use_triton(monkeypatch):
    gpu_without_kernel_image(monkeypatch)
    monkeypatch.setattr(ops, "triton_interpreted", lambda: False)
    monkeypatch.setenv(SELF_CHECK_ENV, "0")
    name, reason = choose_implementation(CudaLikeValue())
    ops.cuda_kernel_image_problem.cache_clear()
    assert name == "triton"
    assert "no kernel image for A GPU from the future" in reason and "Triton compiles" in reason


def test_cuda_inputs_without_extension_nor_triton_use_the_reference(monkeypatch):
    gpu_without_cuda_extension(monkeypatch, triton_installed=False)
    assert choose_implementation(CudaLikeValue()) == (
        "pytorch", f"{CUDA_NOT_BUILT}; Triton is not installed (it comes with torch's CUDA builds)"
    )


def test_deterministic_training_does_not_use_triton(monkeypatch):
    """Triton's value gradient is summed by atomics: in deterministic mode it runs only where no gradient flows."""
    gpu_without_cuda_extension(monkeypatch)
    set_deterministic(True)
    training, inference = CudaLikeValue(), CudaLikeValue()
    training.requires_grad, inference.requires_grad = True, False
    name, reason = choose_implementation(training)
    assert name == "pytorch" and "deterministic mode is on and the Triton kernel sums" in reason
    assert choose_implementation(inference)[0] == "triton"
    with torch.no_grad():
        assert choose_implementation(training)[0] == "triton"


def test_env_triton_on_cpu_inputs_outside_the_interpreter_is_an_error(monkeypatch):
    monkeypatch.setattr(ops, "triton_interpreted", lambda: False)
    monkeypatch.setenv(IMPLEMENTATION_ENV, "triton")
    with pytest.raises(RuntimeError, match="triton but the inputs are on cpu .*TRITON_INTERPRET=1"):
        ms_deform_attn(*make_inputs(ODD_LEVELS))


# CPU: the self-check, on a kernel that claims to be the fused CPU operator.


def swapped_xy(value, shapes, starts, locations, weights):
    """A wrong kernel: x and y swapped (a classic)."""
    return ms_deform_attn_pytorch(value, shapes, starts, locations.flip(-1), weights)


def wrong_value_gradient(value, shapes, starts, locations, weights):
    """A kernel whose forward is right and whose value gradient is 1.5 times too large."""
    value = value + 0.5 * (value - value.detach())
    return ms_deform_attn_pytorch(value, shapes, starts, locations, weights)


def failing(*inputs):
    raise RuntimeError("Failed to find C compiler")


def cpu_kernel_is(monkeypatch, kernel):
    """The implementation table's CPU kernel replaced by ``kernel``, dispatched as if mask_former._C_cpu were built."""
    real = ops.load_extension
    monkeypatch.setattr(ops, "load_extension", lambda name: object() if name == CPU_EXTENSION else real(name))
    monkeypatch.setitem(ops.IMPLEMENTATIONS, "cpu", kernel)


@pytest.mark.parametrize(
    "kernel, message",
    [
        (swapped_xy, r"differs from the PyTorch reference \(.*output [0-9.e+-]+, .*tolerance 1e-04"),
        (wrong_value_gradient, r"differs from the PyTorch reference \(.*grad_value 5\.0+e-01"),
        (failing, r"failed its self-check \(RuntimeError: Failed to find C compiler\)"),
    ],
)
def test_a_wrong_kernel_is_replaced_by_the_reference_and_logged_once(monkeypatch, logs, kernel, message):
    cpu_kernel_is(monkeypatch, kernel)
    inputs = make_inputs(ODD_LEVELS)
    grad_output = random_grad_output(inputs[0], inputs[3])
    expected = forward_backward(ms_deform_attn_pytorch, *inputs, grad_output)
    for _ in range(3):
        results = forward_backward(ms_deform_attn, *inputs, grad_output)
        assert all(torch.equal(a, b) for a, b in zip(results, expected))
    errors = [record for record in logs.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith("ms_deform_attn: the cpu kernel on cpu float32 ")
    assert re.search(message, errors[0].getMessage())
    assert f"{SELF_CHECK_ENV}=0 skips the check" in errors[0].getMessage()
    name, reason = choose_implementation(inputs[0])
    assert name == "pytorch" and re.search(message, reason)


def test_the_self_check_is_per_dtype(monkeypatch, logs):
    cpu_kernel_is(monkeypatch, swapped_xy)
    for dtype, channels in [(torch.float32, 8), (torch.float64, 8), (torch.float32, 3), (torch.bfloat16, 8)]:
        ms_deform_attn(*make_inputs(ODD_LEVELS, channels=channels, dtype=dtype))
    errors = [record.getMessage() for record in logs.records if record.levelno == logging.ERROR]
    assert [message.split(" differs")[0] for message in errors] == [
        f"ms_deform_attn: the cpu kernel on cpu {dtype}" for dtype in ("float32", "float64", "bfloat16")
    ]


def test_the_self_check_can_be_turned_off(monkeypatch, logs):
    cpu_kernel_is(monkeypatch, swapped_xy)
    monkeypatch.setenv(SELF_CHECK_ENV, "0")
    inputs = make_inputs(ODD_LEVELS)
    assert choose_implementation(inputs[0]) == ("cpu", f"CPU inputs and mask_former._C_cpu is built; {NOT_CHECKED}")
    assert torch.equal(ms_deform_attn(*inputs), swapped_xy(*inputs))
    assert not logs.records


def test_a_right_kernel_passes_the_self_check_in_any_mode_without_drawing_random_numbers(monkeypatch, logs):
    """Checked inside inference mode and autocast (as in a predictor), with the global random state untouched."""
    calls = []

    def right(*inputs):
        calls.append(torch.is_grad_enabled())
        return ms_deform_attn_pytorch(*inputs)

    cpu_kernel_is(monkeypatch, right)
    inputs = make_inputs(ODD_LEVELS)
    state = torch.random.get_rng_state()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        output = ms_deform_attn(*inputs)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert calls == [True, False]  # the self-check (with gradients), then the call itself
    assert torch.equal(output, ms_deform_attn_pytorch(*inputs))
    assert not logs.records


class RecordingHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_choice_is_logged_once():
    inputs = make_inputs(ODD_LEVELS)
    # A handler on the logger itself: detectron2's setup_logger("mask_former") stops propagation to the root.
    logger = logging.getLogger("mask_former.ops")
    handler = RecordingHandler()
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for _ in range(3):
            ms_deform_attn(*inputs)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    name, reason = choose_implementation(inputs[0])
    assert handler.messages == [f"ms_deform_attn: using the {name} implementation ({reason})"]


def test_deterministic_switches():
    assert not is_deterministic()
    set_deterministic(True)
    assert is_deterministic()
    set_deterministic(False)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert is_deterministic()
    finally:
        torch.use_deterministic_algorithms(previous)


def test_reference_gradients_flow_on_cpu():
    results = forward_backward(ms_deform_attn, *make_inputs(ODD_LEVELS), torch.ones(2, 6, 16))
    assert results[0].shape == (2, 6, 16)
    assert all(torch.isfinite(grad).all() and grad.abs().sum() > 0 for grad in results[1:])


# CPU: the fused operator.


@requires_cpu_op
@pytest.mark.parametrize("channels", [3, 16])
def test_cpu_op_gradcheck_float64(channels):
    value, shapes, starts, locations, weights = make_inputs(
        [(3, 4), (2, 3)], heads=2, channels=channels, queries=3, points=2, batch=1, dtype=torch.float64
    )
    leaves = [tensor.requires_grad_() for tensor in (value, locations, weights)]

    def kernel(value, locations, weights):
        return ms_deform_attn_cpu(value, shapes, starts, locations, weights)

    assert torch.autograd.gradcheck(kernel, leaves, eps=1e-6, atol=1e-5, rtol=1e-4, nondet_tol=0.0)


@requires_cpu_op
@pytest.mark.parametrize("channels", [1, 32, 33])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_cpu_op_matches_reference(dtype, channels):
    inputs = make_inputs(ODD_LEVELS, heads=3, channels=channels, queries=40, points=4, dtype=dtype)
    assert_matches_reference(inputs, dtype, kernel=ms_deform_attn_cpu)


@requires_cpu_op
def test_cpu_op_matches_reference_with_empty_and_single_query():
    for queries in (0, 1):
        inputs = make_inputs(ODD_LEVELS, queries=queries, batch=1, dtype=torch.float64)
        assert_matches_reference(inputs, torch.float64, kernel=ms_deform_attn_cpu)


@requires_cpu_op
def test_cpu_op_non_contiguous_inputs():
    value, shapes, starts, locations, weights = make_inputs(ODD_LEVELS, channels=8)
    strided_value = torch.stack([value, -value], -1)[..., 0]
    assert not strided_value.is_contiguous()
    torch.testing.assert_close(
        ms_deform_attn_cpu(strided_value, shapes, starts, locations, weights),
        ms_deform_attn_cpu(value, shapes, starts, locations, weights),
        rtol=0,
        atol=0,
    )


@requires_cpu_op
def test_cpu_op_is_bit_identical_across_runs_and_thread_counts():
    """Each thread owns a disjoint slice of grad_value: the same sums in the same order, whatever the threads."""
    inputs = make_inputs([(5, 7), (3, 3)], heads=2, channels=32, queries=500, points=4)
    grad_output = random_grad_output(inputs[0], inputs[3])
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 1):
            torch.set_num_threads(threads)
            results.append(forward_backward(ms_deform_attn_cpu, *inputs, grad_output))
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


@requires_cpu_op
def test_cpu_op_bad_inputs_are_clear_errors():
    value, shapes, starts, locations, weights = make_inputs(ODD_LEVELS)
    extension = load_extension(CPU_EXTENSION)
    with pytest.raises(RuntimeError, match="spatial_shapes must be int64"):
        ms_deform_attn_cpu(value, shapes.int(), starts, locations, weights)
    with pytest.raises(RuntimeError, match="attention_weights must be"):
        ms_deform_attn_cpu(value, shapes, starts, locations, weights[..., :1])
    with pytest.raises(RuntimeError, match="does not fit in value"):
        ms_deform_attn_cpu(value, shapes * 2, starts, locations, weights)
    with pytest.raises(RuntimeError, match="sampling_locations and attention_weights must be Float"):
        extension.ms_deform_attn_forward(value, shapes, starts, locations.double(), weights)
    with pytest.raises(RuntimeError, match="grad_output must be"):
        extension.ms_deform_attn_backward(value, shapes, starts, locations, weights, torch.zeros(1), True)


# GPU: the kernel.


@requires_kernel
def test_cuda_inputs_use_the_kernel():
    inputs = make_inputs(ODD_LEVELS, device="cuda")
    assert choose_implementation(inputs[0])[0] == "cuda"
    torch.testing.assert_close(ms_deform_attn(*inputs), ms_deform_attn_cuda(*inputs), rtol=0, atol=0)


@requires_kernel
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("channels", [3, 32])
def test_gradcheck_float64(channels, deterministic):
    value, shapes, starts, locations, weights = make_inputs(
        [(3, 4), (2, 3)], heads=2, channels=channels, queries=3, points=2, batch=1, dtype=torch.float64, device="cuda"
    )
    leaves = [tensor.requires_grad_() for tensor in (value, locations, weights)]

    def kernel(value, locations, weights):
        return ms_deform_attn_cuda(value, shapes, starts, locations, weights, deterministic=deterministic)

    # Atomics sum in any order: allow last-bit differences between two backward passes.
    nondet_tol = 0.0 if deterministic else 1e-12
    assert torch.autograd.gradcheck(kernel, leaves, eps=1e-6, atol=1e-5, rtol=1e-4, nondet_tol=nondet_tol)


@requires_kernel
@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("channels", [32, 64, 128, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_matches_reference(dtype, channels, deterministic):
    inputs = make_inputs(ODD_LEVELS, heads=3, channels=channels, queries=40, points=4, dtype=dtype, device="cuda")
    assert_matches_reference(inputs, dtype, deterministic)


@pytest.mark.parametrize(
    "device", [pytest.param("cpu", marks=requires_cpu_op), pytest.param("cuda", marks=requires_kernel)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_points_on_borders_and_outside(dtype, device):
    """Pixel coordinates x = loc * W - 0.5 on every half pixel from -2.5 to W + 2, on maps of power-of-two
    sizes so that both implementations compute them exactly: corners exactly on borders, the x = -1 and
    x = W edges, and points fully outside."""
    level_shapes = [(4, 8), (2, 4)]
    steps = torch.arange(-4, 2 * 8 + 6, dtype=torch.float64)  # loc * 2W for the widest level
    grid_x, grid_y = torch.meshgrid(steps, steps, indexing="ij")
    # The same loc = k / (2 * 8) on every level.
    grid = torch.stack([grid_x.flatten(), grid_y.flatten()], -1) / 16
    num_queries = grid.shape[0]
    value, shapes, starts, _, weights = make_inputs(
        level_shapes, heads=1, channels=32, queries=num_queries, points=1, dtype=dtype
    )
    locations = grid.view(1, num_queries, 1, 1, 1, 2).expand(2, -1, -1, len(level_shapes), -1, -1)
    inputs = [value, shapes, starts, locations.to(dtype).contiguous(), weights]
    kernel = ms_deform_attn_cpu if device == "cpu" else None
    assert_matches_reference([tensor.to(device) for tensor in inputs], dtype, kernel=kernel)


@requires_kernel
def test_unaligned_value_takes_the_generic_path():
    value, shapes, starts, locations, weights = make_inputs(ODD_LEVELS, channels=32, device="cuda")
    storage = torch.empty(value.numel() + 1, device="cuda")
    unaligned = storage[1:].view_as(value).copy_(value)
    assert unaligned.data_ptr() % 16 != 0
    assert_matches_reference([unaligned, shapes, starts, locations, weights], torch.float32)


@requires_kernel
def test_half_value_with_float32_locations():
    """As under autocast: half values, float32 locations and weights, whose gradients stay float32."""
    value, shapes, starts, locations, weights = make_inputs(ODD_LEVELS, channels=32, device="cuda")
    grad_output = random_grad_output(value.half(), locations)
    results = forward_backward(ms_deform_attn, value.half(), shapes, starts, locations, weights, grad_output)
    assert [tensor.dtype for tensor in results] == [torch.float16, torch.float16, torch.float32, torch.float32]


@requires_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_deterministic_backward_is_bit_identical(dtype):
    # Many queries on small maps: every value pixel gathers many contributions.
    inputs = make_inputs([(5, 7), (3, 3)], heads=2, channels=32, queries=500, points=4, dtype=dtype, device="cuda")
    grad_output = random_grad_output(inputs[0], inputs[3])
    set_deterministic(True)
    first, *others = [forward_backward(ms_deform_attn, *inputs, grad_output) for _ in range(3)]
    for other in others:
        assert all(torch.equal(a, b) for a, b in zip(first, other))
    set_deterministic(False)
    with_atomics = forward_backward(ms_deform_attn, *inputs, grad_output)
    for name, deterministic, atomic in zip(["output", "value", "locations", "weights"], first, with_atomics):
        assert_close_relative(deterministic, atomic, TOLERANCES[dtype], name)


@requires_kernel
def test_bad_inputs_are_clear_errors():
    value, shapes, starts, locations, weights = make_inputs(ODD_LEVELS, device="cuda")
    with pytest.raises(RuntimeError, match="spatial_shapes must be int64"):
        ms_deform_attn_cuda(value, shapes.int(), starts, locations, weights)
    with pytest.raises(RuntimeError, match="attention_weights must be"):
        ms_deform_attn_cuda(value, shapes, starts, locations, weights[..., :1])


def test_short_softmax_matches_softmax_with_gradients():
    from mask_former.ops.ms_deform_attn_module import short_softmax

    x = (torch.randn(2, 50, 8, 12) * 5).requires_grad_()
    grad = torch.randn(2, 50, 8, 12)
    expected = torch.softmax(x, -1)
    (expected_grad,) = torch.autograd.grad(expected, x, grad)
    result = short_softmax(x)
    (result_grad,) = torch.autograd.grad(result, x, grad)
    torch.testing.assert_close(result, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(result_grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_sampling_locations_equal_the_plain_broadcast():
    from mask_former.ops.ms_deform_attn_module import sampling_locations

    reference_points, offsets = torch.rand(2, 30, 3, 2), torch.randn(2, 30, 8, 3, 4, 2) * 3
    normalizer = torch.tensor([[9.0, 7.0], [3.0, 5.0], [1.0, 1.0]])
    plain = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
    assert torch.equal(sampling_locations(reference_points, offsets, normalizer), plain)
