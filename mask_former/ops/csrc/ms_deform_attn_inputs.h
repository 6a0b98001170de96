// The inputs of multi-scale deformable attention, their sizes and their checks, shared by the CUDA
// (mask_former._C) and the CPU (mask_former._C_cpu) operators: every bad input is an error that names the
// argument, its shape and dtype.
//
// Shapes (N batch, S = sum of H_l * W_l, M heads, D channels per head, Lq queries, L levels, P points):
//   value               [N, S, M, D]           float64, float32, float16 or bfloat16
//   spatial_shapes      [L, 2] int64           (H_l, W_l)
//   level_start_index   [L] int64              where each level starts in S
//   sampling_locations  [N, Lq, M, L, P, 2]    (x, y) in [0, 1], in value's accumulation type
//   attention_weights   [N, Lq, M, L, P]       in value's accumulation type
//   output, grad_output [N, Lq, M * D]         value's type
// The accumulation type is float32 for float16, bfloat16 and float32 values, and float64 for float64.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <cstdint>
#include <vector>

namespace mask_former {

// The sizes of one call.
struct Dims {
  int64_t batch, spatial, heads, channels, queries, levels, points;

  C10_HOST_DEVICE int64_t groups() const { return batch * queries * heads; }
  C10_HOST_DEVICE int64_t samples_per_group() const { return levels * points; }
};

// One level's map: its size and where it starts in S.
struct Level {
  int64_t height, width, start;
};

// The op's five inputs (shapes above).
struct Inputs {
  at::Tensor value, spatial_shapes, level_start_index, sampling_locations, attention_weights;

  Dims dims() const {
    return {value.size(0), value.size(1), value.size(2), value.size(3),
            sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
  }

  Inputs contiguous() const {
    return {value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
            sampling_locations.contiguous(), attention_weights.contiguous()};
  }
};

inline void check_same_device(const at::Tensor& tensor, const at::Tensor& value, const char* name) {
  TORCH_CHECK(tensor.device() == value.device(), "ms_deform_attn: ", name, " is on ", tensor.device(),
              " but value is on ", value.device());
}

// `device` is the device type the operator runs on (kCUDA or kCPU).
inline void check_inputs(const Inputs& inputs, c10::DeviceType device) {
  const auto& [value, spatial_shapes, level_start_index, sampling_locations, attention_weights] = inputs;
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

inline void check_grad_output(const at::Tensor& grad_output, const Inputs& inputs) {
  const at::Tensor& value = inputs.value;
  check_same_device(grad_output, value, "grad_output");
  const std::vector<int64_t> output_shape{value.size(0), inputs.sampling_locations.size(1),
                                          value.size(2) * value.size(3)};
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(output_shape) && grad_output.scalar_type() == value.scalar_type(),
              "ms_deform_attn: grad_output must be ", value.scalar_type(), " ", output_shape, ", got ",
              grad_output.scalar_type(), " ", grad_output.sizes());
}

}  // namespace mask_former
