// The Python functions of a multi-scale deformable attention extension, one definition for the CUDA
// (mask_former._C) and the CPU (mask_former._C_cpu) ones: same names, arguments and input checks.
#pragma once

#include <torch/extension.h>

#include <vector>

#include "ms_deform_attn_inputs.h"

namespace mask_former {

using ForwardOp = at::Tensor (*)(const Inputs& inputs);
// Returns {grad_value, grad_sampling_locations, grad_attention_weights}.
using BackwardOp = std::vector<at::Tensor> (*)(const Inputs& inputs, const at::Tensor& grad_output,
                                               bool deterministic);

// Defines ms_deform_attn_forward and ms_deform_attn_backward in `m`: they check their inputs, which must be
// on `device`, then run `forward` or `backward`.
inline void define_ms_deform_attn(pybind11::module_& m, c10::DeviceType device, ForwardOp forward,
                                  BackwardOp backward) {
  namespace py = pybind11;
  m.def(
      "ms_deform_attn_forward",
      [device, forward](const at::Tensor& value, const at::Tensor& spatial_shapes,
                        const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                        const at::Tensor& attention_weights) {
        const Inputs inputs{value, spatial_shapes, level_start_index, sampling_locations, attention_weights};
        check_inputs(inputs, device);
        return forward(inputs);
      },
      "Multi-scale deformable attention forward -> [N, Lq, M * D]", py::arg("value"), py::arg("spatial_shapes"),
      py::arg("level_start_index"), py::arg("sampling_locations"), py::arg("attention_weights"));
  m.def(
      "ms_deform_attn_backward",
      [device, backward](const at::Tensor& value, const at::Tensor& spatial_shapes,
                         const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                         const at::Tensor& attention_weights, const at::Tensor& grad_output, bool deterministic) {
        const Inputs inputs{value, spatial_shapes, level_start_index, sampling_locations, attention_weights};
        check_inputs(inputs, device);
        check_grad_output(grad_output, inputs);
        return backward(inputs, grad_output, deterministic);
      },
      "Gradients [value, sampling_locations, attention_weights] of multi-scale deformable attention",
      py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
      py::arg("attention_weights"), py::arg("grad_output"), py::arg("deterministic"));
}

}  // namespace mask_former
