// Deterministic backward: grad_value without atomics. The main backward kernel writes one record
// (value row, coefficient) per sample corner; a stable sort groups the records by row, and one warp per
// value row sums its records in their original order. Same inputs, same bits.
#include <ATen/Dispatch.h>

#include "ms_deform_attn_kernels.cuh"

namespace mask_former {
namespace {

// grad_value[row] = sum over the row's records r, in order, of coefficient[r] * grad_output[group of r].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreadsPerBlock) gather_grad_value_kernel(
    const int32_t* __restrict__ sorted_rows,
    const int64_t* __restrict__ record_order,
    const at::opmath_type<scalar_t>* __restrict__ record_coefficients,
    const scalar_t* __restrict__ grad_output,
    scalar_t* __restrict__ grad_value,
    const int64_t records,
    const int64_t records_per_group,
    const int64_t rows,
    const int64_t channels) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t row = thread / kWarpSize;
  if (row >= rows) {
    return;
  }
  const int lane = static_cast<int>(thread % kWarpSize);
  int64_t first = 0;
  int64_t last = records;
  while (first < last) {
    const int64_t middle = first + (last - first) / 2;
    if (sorted_rows[middle] < row) {
      first = middle + 1;
    } else {
      last = middle;
    }
  }
  for (int64_t channel = lane; channel < channels; channel += kWarpSize) {
    acc_t sum = 0;
    for (int64_t position = first; position < records && sorted_rows[position] == row; ++position) {
      const int64_t record = record_order[position];
      const int64_t group = record / records_per_group;
      sum += record_coefficients[record] * static_cast<acc_t>(grad_output[group * channels + channel]);
    }
    grad_value[row * channels + channel] = static_cast<scalar_t>(sum);
  }
}

}  // namespace

at::Tensor backward_deterministic(const BackwardArgs& args) {
  const at::Tensor& value = args.inputs.value;
  const Dims& dims = args.dims;
  const int64_t rows = dims.batch * dims.spatial * dims.heads;
  TORCH_CHECK(rows < kNoRow, "ms_deform_attn: deterministic backward supports fewer than 2^31 - 1 rows of value "
              "(N * S * M), got ", rows);
  const int64_t records_per_group = dims.samples_per_group() * kCorners;
  const int64_t records = dims.groups() * records_per_group;
  at::Tensor record_rows = at::empty({records}, value.options().dtype(at::kInt));
  at::Tensor record_coefficients = at::empty({records}, args.inputs.sampling_locations.options());
  at::Tensor grad_value = at::empty_like(value);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const bool aligned = pack_aligned(value) && pack_aligned(args.grad_output);
        with_channel_layout<scalar_t>(dims.channels, aligned, [&](auto layout) {
          launch_backward_kernel<scalar_t, decltype(layout), true>(
              args, nullptr, record_rows.data_ptr<int32_t>(), record_coefficients.data_ptr<acc_t>());
        });
        if (rows == 0) {
          return;
        }
        const auto [sorted_rows, record_order] =
            at::sort(record_rows, /*stable=*/std::optional<bool>(true), /*dim=*/0, /*descending=*/false);
        gather_grad_value_kernel<scalar_t>
            <<<blocks_for(rows * kWarpSize), kThreadsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
                sorted_rows.data_ptr<int32_t>(),
                record_order.data_ptr<int64_t>(),
                record_coefficients.data_ptr<acc_t>(),
                args.grad_output.data_ptr<scalar_t>(),
                grad_value.data_ptr<scalar_t>(),
                records,
                records_per_group,
                rows,
                dims.channels);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return grad_value;
}

}  // namespace mask_former
