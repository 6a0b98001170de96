#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>

#include "ms_deform_attn.h"
#include "ms_deform_attn_kernels.cuh"

namespace mask_former {

at::Tensor ms_deform_attn_forward_cuda(const Inputs& inputs) {
  const c10::cuda::CUDAGuard device_guard(inputs.value.device());
  const Inputs in = inputs.contiguous();
  const Dims dims = in.dims();
  at::Tensor output = at::empty({dims.batch, dims.queries, dims.heads * dims.channels}, in.value.options());
  if (output.numel() == 0) {
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, in.value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        with_channel_layout<scalar_t>(dims.channels, pack_aligned(in.value), [&](auto layout) {
          using Layout = decltype(layout);
          ms_deform_attn_forward_kernel<scalar_t, Layout>
              <<<blocks_for(dims.groups() * Layout::G), kThreadsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
                  in.value.data_ptr<scalar_t>(),
                  in.spatial_shapes.data_ptr<int64_t>(),
                  in.level_start_index.data_ptr<int64_t>(),
                  in.sampling_locations.data_ptr<acc_t>(),
                  in.attention_weights.data_ptr<acc_t>(),
                  output.data_ptr<scalar_t>(),
                  dims);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
  return output;
}

}  // namespace mask_former
