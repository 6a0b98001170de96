// Input checks of multi-scale deformable attention, shared by the CUDA (mask_former._C) and the CPU
// (mask_former._C_cpu) bindings: every bad input is an error that names the argument, its shape and dtype.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <vector>

namespace mask_former {

inline void check_same_device(const at::Tensor& tensor, const at::Tensor& value, const char* name) {
  TORCH_CHECK(tensor.device() == value.device(), "ms_deform_attn: ", name, " is on ", tensor.device(),
              " but value is on ", value.device());
}

// `device` is the device type the binding runs on (kCUDA or kCPU).
inline void check_inputs(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    c10::DeviceType device) {
  TORCH_CHECK(value.device().type() == device, "ms_deform_attn: value must be a ", c10::DeviceTypeName(device),
              " tensor, got ", value.device());
  TORCH_CHECK(value.dim() == 4, "ms_deform_attn: value must be [N, S, M, D], got ", value.sizes());
  const auto dtype = value.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "ms_deform_attn: value must be float64, float32, float16 or bfloat16, got ", dtype);
  check_same_device(spatial_shapes, value, "spatial_shapes");
  check_same_device(level_start_index, value, "level_start_index");
  check_same_device(sampling_locations, value, "sampling_locations");
  check_same_device(attention_weights, value, "attention_weights");
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "ms_deform_attn: sampling_locations must be [N, Lq, M, L, P, 2], got ", sampling_locations.sizes());
  const int64_t levels = sampling_locations.size(3);
  TORCH_CHECK(sampling_locations.size(0) == value.size(0) && sampling_locations.size(2) == value.size(2),
              "ms_deform_attn: sampling_locations ", sampling_locations.sizes(), " and value ", value.sizes(),
              " disagree on N or M");
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "ms_deform_attn: attention_weights must be [N, Lq, M, L, P] = ", sampling_locations.sizes().slice(0, 5),
              ", got ", attention_weights.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong && spatial_shapes.dim() == 2 &&
                  spatial_shapes.size(0) == levels && spatial_shapes.size(1) == 2,
              "ms_deform_attn: spatial_shapes must be int64 [L, 2] with L = ", levels, ", got ",
              spatial_shapes.scalar_type(), " ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.scalar_type() == at::kLong && level_start_index.dim() == 1 &&
                  level_start_index.size(0) == levels,
              "ms_deform_attn: level_start_index must be int64 [L] with L = ", levels, ", got ",
              level_start_index.scalar_type(), " ", level_start_index.sizes());
  const auto accumulation = at::toOpMathType(dtype);
  TORCH_CHECK(sampling_locations.scalar_type() == accumulation && attention_weights.scalar_type() == accumulation,
              "ms_deform_attn: for ", dtype, " value, sampling_locations and attention_weights must be ", accumulation,
              ", got ", sampling_locations.scalar_type(), " and ", attention_weights.scalar_type());
}

inline void check_grad_output(const at::Tensor& grad_output, const at::Tensor& value,
                              const at::Tensor& sampling_locations) {
  check_same_device(grad_output, value, "grad_output");
  const std::vector<int64_t> output_shape{value.size(0), sampling_locations.size(1), value.size(2) * value.size(3)};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(output_shape) && grad_output.scalar_type() == value.scalar_type(),
              "ms_deform_attn: grad_output must be ", value.scalar_type(), " ", output_shape, ", got ",
              grad_output.scalar_type(), " ", grad_output.sizes());
}

}  // namespace mask_former
