// Python bindings of mask_former._C (CUDA); the input checks are shared with the CPU op.
#include <torch/extension.h>

#include "ms_deform_attn.h"
#include "ms_deform_attn_checks.h"

namespace mask_former {
namespace {

at::Tensor forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, at::kCUDA);
  return ms_deform_attn_forward_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights);
}

std::vector<at::Tensor> backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output,
    bool deterministic) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, at::kCUDA);
  check_grad_output(grad_output, value, sampling_locations);
  return ms_deform_attn_backward_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                      grad_output, deterministic);
}

}  // namespace
}  // namespace mask_former

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mask_former CUDA ops: multi-scale deformable attention";
  m.def("ms_deform_attn_forward", &mask_former::forward, "Multi-scale deformable attention forward -> [N, Lq, M * D]",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"));
  m.def("ms_deform_attn_backward", &mask_former::backward,
        "Gradients [value, sampling_locations, attention_weights] of multi-scale deformable attention",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"), py::arg("grad_output"), py::arg("deterministic"));
}
