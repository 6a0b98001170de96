// Multi-scale deformable attention on CUDA: the host functions shared by the bindings and the kernels.
// Inputs, shapes and dtypes as in ms_deform_attn_inputs.h; the bindings have checked the inputs.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "ms_deform_attn_inputs.h"

namespace mask_former {

at::Tensor ms_deform_attn_forward_cuda(const Inputs& inputs);

// Returns {grad_value, grad_sampling_locations, grad_attention_weights}. With `deterministic`, grad_value
// is gathered in a fixed order instead of accumulated with atomics: bit-identical from run to run.
std::vector<at::Tensor> ms_deform_attn_backward_cuda(const Inputs& inputs, const at::Tensor& grad_output,
                                                     bool deterministic);

}  // namespace mask_former
