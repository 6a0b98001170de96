// Benchmark-only baseline in the style of Deformable-DETR's ms_deform_attn_im2col: one thread per output
// element (n, q, m, d) samples its own channel; the backward adds into grad_value with one atomicAdd per
// element and corner, and reduces the location and weight gradients of a (n, q, m) block naively (thread 0
// sums the block's partials in shared memory). float32 only. Not part of the package.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

namespace {

constexpr int kThreads = 1024;

struct Sizes {
  int64_t batch, spatial, heads, channels, queries, levels, points;
};

// Bilinear read of one channel; `channel_value` points at (pixel 0 of the level, head, channel) and
// consecutive pixels are `pixel_stride` apart.
__device__ float bilinear_read(const float* channel_value, int64_t pixel_stride, int64_t height, int64_t width,
                               float y, float x) {
  const int64_t y0 = floorf(y);
  const int64_t x0 = floorf(x);
  const float dy = y - y0, dx = x - x0;
  float result = 0;
  if (y0 >= 0 && x0 >= 0) result += (1 - dy) * (1 - dx) * channel_value[(y0 * width + x0) * pixel_stride];
  if (y0 >= 0 && x0 + 1 < width) result += (1 - dy) * dx * channel_value[(y0 * width + x0 + 1) * pixel_stride];
  if (y0 + 1 < height && x0 >= 0) result += dy * (1 - dx) * channel_value[((y0 + 1) * width + x0) * pixel_stride];
  if (y0 + 1 < height && x0 + 1 < width) {
    result += dy * dx * channel_value[((y0 + 1) * width + x0 + 1) * pixel_stride];
  }
  return result;
}

__global__ void im2col_forward_kernel(const float* value, const int64_t* shapes, const int64_t* starts,
                                      const float* locations, const float* weights, float* output, Sizes s) {
  const int64_t total = s.batch * s.queries * s.heads * s.channels;
  for (int64_t index = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; index < total;
       index += (int64_t)blockDim.x * gridDim.x) {
    const int64_t d = index % s.channels;
    const int64_t m = (index / s.channels) % s.heads;
    const int64_t n = index / (s.channels * s.heads * s.queries);
    const int64_t pixel_stride = s.heads * s.channels;
    int64_t sample = (index / s.channels) * s.levels * s.points;
    float sum = 0;
    for (int64_t l = 0; l < s.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
      const float* channel_value = value + ((n * s.spatial + starts[l]) * s.heads + m) * s.channels + d;
      for (int64_t p = 0; p < s.points; ++p, ++sample) {
        const float y = locations[2 * sample + 1] * height - 0.5f;
        const float x = locations[2 * sample] * width - 0.5f;
        if (y > -1 && x > -1 && y < height && x < width) {
          sum += weights[sample] * bilinear_read(channel_value, pixel_stride, height, width, y, x);
        }
      }
    }
    output[index] = sum;
  }
}

// One block of `channels` threads per (n, q, m).
__global__ void im2col_backward_kernel(const float* value, const int64_t* shapes, const int64_t* starts,
                                       const float* locations, const float* weights, const float* grad_output,
                                       float* grad_value, float* grad_locations, float* grad_weights, Sizes s) {
  extern __shared__ float partials[];  // [3, blockDim]: d/dx, d/dy, d/dweight of each thread's channel
  float* partial_x = partials;
  float* partial_y = partials + blockDim.x;
  float* partial_w = partials + 2 * blockDim.x;
  const int tid = threadIdx.x;
  const int64_t index = blockIdx.x * (int64_t)blockDim.x + tid;
  const int64_t d = index % s.channels;
  const int64_t m = (index / s.channels) % s.heads;
  const int64_t n = index / (s.channels * s.heads * s.queries);
  const int64_t pixel_stride = s.heads * s.channels;
  const float grad = grad_output[index];
  int64_t sample = (index / s.channels) * s.levels * s.points;
  for (int64_t l = 0; l < s.levels; ++l) {
    const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
    const int64_t level_offset = ((n * s.spatial + starts[l]) * s.heads + m) * s.channels + d;
    for (int64_t p = 0; p < s.points; ++p, ++sample) {
      const float y = locations[2 * sample + 1] * height - 0.5f;
      const float x = locations[2 * sample] * width - 0.5f;
      const float weight = weights[sample];
      partial_x[tid] = partial_y[tid] = partial_w[tid] = 0;
      if (y > -1 && x > -1 && y < height && x < width) {
        const int64_t y0 = floorf(y);
        const int64_t x0 = floorf(x);
        const float dy = y - y0, dx = x - x0;
        const int64_t rows[2] = {y0, y0 + 1};
        const int64_t cols[2] = {x0, x0 + 1};
        const float row_weights[2] = {1 - dy, dy};
        const float col_weights[2] = {1 - dx, dx};
        float sampled = 0, grad_y = 0, grad_x = 0;
        for (int i = 0; i < 2; ++i) {
          for (int j = 0; j < 2; ++j) {
            if (rows[i] < 0 || rows[i] >= height || cols[j] < 0 || cols[j] >= width) continue;
            const int64_t offset = level_offset + (rows[i] * width + cols[j]) * pixel_stride;
            const float corner = value[offset];
            sampled += row_weights[i] * col_weights[j] * corner;
            grad_y += (i ? 1.f : -1.f) * col_weights[j] * corner;
            grad_x += (j ? 1.f : -1.f) * row_weights[i] * corner;
            atomicAdd(grad_value + offset, weight * row_weights[i] * col_weights[j] * grad);
          }
        }
        partial_w[tid] = grad * sampled;
        partial_x[tid] = grad * weight * width * grad_x;
        partial_y[tid] = grad * weight * height * grad_y;
      }
      __syncthreads();
      if (tid == 0) {
        float sum_x = 0, sum_y = 0, sum_w = 0;
        for (int t = 0; t < blockDim.x; ++t) {
          sum_x += partial_x[t];
          sum_y += partial_y[t];
          sum_w += partial_w[t];
        }
        grad_locations[2 * sample] = sum_x;
        grad_locations[2 * sample + 1] = sum_y;
        grad_weights[sample] = sum_w;
      }
      __syncthreads();
    }
  }
}

Sizes sizes_of(const at::Tensor& value, const at::Tensor& locations) {
  return {value.size(0), value.size(1), value.size(2), value.size(3), locations.size(1), locations.size(3),
          locations.size(4)};
}

}  // namespace

at::Tensor im2col_forward(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                          const at::Tensor& locations, const at::Tensor& weights) {
  const c10::cuda::CUDAGuard guard(value.device());
  const Sizes s = sizes_of(value, locations);
  at::Tensor output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  const int64_t blocks = std::min<int64_t>((output.numel() + kThreads - 1) / kThreads, 65535 * 16);
  im2col_forward_kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      value.data_ptr<float>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), locations.data_ptr<float>(),
      weights.data_ptr<float>(), output.data_ptr<float>(), s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

std::vector<at::Tensor> im2col_backward(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                                        const at::Tensor& locations, const at::Tensor& weights,
                                        const at::Tensor& grad_output) {
  const c10::cuda::CUDAGuard guard(value.device());
  const Sizes s = sizes_of(value, locations);
  TORCH_CHECK(s.channels <= 1024, "im2col baseline: at most 1024 channels per head");
  at::Tensor grad_value = at::zeros_like(value);
  at::Tensor grad_locations = at::empty_like(locations);
  at::Tensor grad_weights = at::empty_like(weights);
  const int64_t blocks = s.batch * s.queries * s.heads;
  const unsigned int threads = static_cast<unsigned int>(s.channels);
  im2col_backward_kernel<<<static_cast<unsigned int>(blocks), threads, 3 * threads * sizeof(float),
                           c10::cuda::getCurrentCUDAStream()>>>(
      value.data_ptr<float>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(), locations.data_ptr<float>(),
      weights.data_ptr<float>(), grad_output.data_ptr<float>(), grad_value.data_ptr<float>(),
      grad_locations.data_ptr<float>(), grad_weights.data_ptr<float>(), s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_value, grad_locations, grad_weights};
}
