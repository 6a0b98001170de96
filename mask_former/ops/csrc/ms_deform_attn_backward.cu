#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>

#include "ms_deform_attn.h"
#include "ms_deform_attn_kernels.cuh"

namespace mask_former {

// grad_value accumulates with atomics in the accumulation type (float32 for half types, then cast).
at::Tensor backward_with_atomics(const BackwardArgs& args) {
  const at::Tensor& value = args.inputs.value;
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(at::toOpMathType(value.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const bool aligned = pack_aligned(value) && pack_aligned(args.grad_output);
        with_channel_layout<scalar_t>(args.dims.channels, aligned, [&](auto layout) {
          launch_backward_kernel<scalar_t, decltype(layout), false>(
              args, grad_value.data_ptr<acc_t>(), nullptr, nullptr);
        });
      });
  return grad_value.to(value.scalar_type());
}

std::vector<at::Tensor> ms_deform_attn_backward_cuda(const Inputs& inputs, const at::Tensor& grad_output,
                                                     bool deterministic) {
  const c10::cuda::CUDAGuard device_guard(inputs.value.device());
  BackwardArgs args{
      inputs.contiguous(),
      grad_output.contiguous(),
      at::empty(inputs.sampling_locations.sizes(), inputs.sampling_locations.options()),
      at::empty(inputs.attention_weights.sizes(), inputs.attention_weights.options()),
      inputs.dims()};
  if (args.dims.groups() == 0 || args.dims.channels == 0) {
    return {at::zeros_like(inputs.value), args.grad_sampling_locations.zero_(), args.grad_attention_weights.zero_()};
  }
  at::Tensor grad_value = deterministic ? backward_deterministic(args) : backward_with_atomics(args);
  return {grad_value, args.grad_sampling_locations, args.grad_attention_weights};
}

}  // namespace mask_former
