// Multi-scale deformable attention on CUDA: the host functions shared by the bindings and the kernels.
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

#include <vector>

namespace mask_former {

at::Tensor ms_deform_attn_forward_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

// Returns {grad_value, grad_sampling_locations, grad_attention_weights}. With `deterministic`, grad_value
// is gathered in a fixed order instead of accumulated with atomics: bit-identical from run to run.
std::vector<at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output,
    bool deterministic);

}  // namespace mask_former
