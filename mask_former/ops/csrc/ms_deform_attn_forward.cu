#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>

#include "ms_deform_attn.h"
#include "ms_deform_attn_kernels.cuh"

namespace mask_former {

at::Tensor ms_deform_attn_forward_cuda(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Dims dims = dims_of(value, sampling_locations);
  const at::Tensor value_c = value.contiguous();
  const at::Tensor shapes_c = spatial_shapes.contiguous();
  const at::Tensor starts_c = level_start_index.contiguous();
  const at::Tensor locations_c = sampling_locations.contiguous();
  const at::Tensor weights_c = attention_weights.contiguous();
  at::Tensor output = at::empty({dims.batch, dims.queries, dims.heads * dims.channels}, value.options());
  if (output.numel() == 0) {
    return output;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        with_channel_layout<scalar_t>(dims.channels, pack_aligned(value_c), [&](auto layout) {
          using Layout = decltype(layout);
          ms_deform_attn_forward_kernel<scalar_t, Layout>
              <<<blocks_for(dims.groups() * Layout::G), kThreadsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
                  value_c.data_ptr<scalar_t>(),
                  shapes_c.data_ptr<int64_t>(),
                  starts_c.data_ptr<int64_t>(),
                  locations_c.data_ptr<acc_t>(),
                  weights_c.data_ptr<acc_t>(),
                  output.data_ptr<scalar_t>(),
                  dims);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
      });
  return output;
}

}  // namespace mask_former
