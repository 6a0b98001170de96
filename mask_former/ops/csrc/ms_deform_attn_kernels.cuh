// Multi-scale deformable attention kernels, shared by the forward and the two backward translation units.
//
// Work split: one lane group per (batch, query, head) triple ("group"). Its G lanes hold the head's D
// channels, CPL consecutive channels each, and loop over the levels and points together, so that a corner
// read is one coalesced row of D channels and the gradients of a point's location and weight are a
// shuffle reduction over G lanes, written by lane 0 without atomics.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "ms_deform_attn_inputs.h"

namespace mask_former {

constexpr int kThreadsPerBlock = 256;
constexpr int kWarpSize = 32;
constexpr int kPackBytes = 16;
constexpr int kCorners = 4;
// Row of a deterministic-backward record whose corner reads nothing: sorts after every real row.
constexpr int32_t kNoRow = std::numeric_limits<int32_t>::max();

inline unsigned int blocks_for(int64_t threads) {
  const int64_t blocks = (threads + kThreadsPerBlock - 1) / kThreadsPerBlock;
  TORCH_CHECK(blocks <= std::numeric_limits<int>::max(), "ms_deform_attn: too many queries for one launch");
  return static_cast<unsigned int>(blocks);
}

inline bool pack_aligned(const at::Tensor& tensor) {
  return reinterpret_cast<uintptr_t>(tensor.data_ptr()) % kPackBytes == 0;
}

// G lanes per group, CPL consecutive channels per lane. EXACT: D == G * CPL and a lane reads its channels
// with one 16-byte load. Otherwise (any D) a warp owns the group and its lanes stride over the channels.
template <int G_, int CPL_, bool EXACT_>
struct ChannelLayout {
  static constexpr int G = G_;
  static constexpr int CPL = CPL_;
  static constexpr bool EXACT = EXACT_;
  static_assert(G > 0 && G <= kWarpSize && (G & (G - 1)) == 0, "a group is a power-of-two part of a warp");
};

// Calls launch(ChannelLayout<...>{}) with the fastest layout for `channels`. The vectorized layouts need
// 16-byte aligned rows; float64 (used by gradcheck) always takes the generic one.
template <typename scalar_t, typename Launch>
void with_channel_layout(int64_t channels, bool aligned, Launch&& launch) {
  constexpr int pack = kPackBytes / sizeof(scalar_t);
  if constexpr (sizeof(scalar_t) <= 4) {
    if (aligned) {
      switch (channels) {
        case 32:
          launch(ChannelLayout<32 / pack, pack, true>{});
          return;
        case 64:
          launch(ChannelLayout<64 / pack, pack, true>{});
          return;
        case 128:
          launch(ChannelLayout<128 / pack, pack, true>{});
          return;
        default:
          break;
      }
    }
  }
  launch(ChannelLayout<kWarpSize, 1, false>{});
}

template <int BYTES>
struct RawBits;
template <>
struct RawBits<2> {
  using type = unsigned short;
};
template <>
struct RawBits<4> {
  using type = unsigned int;
};
template <>
struct RawBits<8> {
  using type = uint2;
};
template <>
struct RawBits<16> {
  using type = uint4;
};

// Reads CPL consecutive channels with one load and widens them to the accumulation type.
template <typename scalar_t, typename acc_t, int CPL>
__device__ __forceinline__ void load_channels(const scalar_t* src, acc_t (&dst)[CPL]) {
  using raw_t = typename RawBits<sizeof(scalar_t) * CPL>::type;
  const raw_t raw = __ldg(reinterpret_cast<const raw_t*>(src));
  const scalar_t* values = reinterpret_cast<const scalar_t*>(&raw);
#pragma unroll
  for (int i = 0; i < CPL; ++i) {
    dst[i] = static_cast<acc_t>(values[i]);
  }
}

template <typename scalar_t, typename acc_t, int CPL>
__device__ __forceinline__ void store_channels(scalar_t* dst, const acc_t (&src)[CPL]) {
  using raw_t = typename RawBits<sizeof(scalar_t) * CPL>::type;
  raw_t raw;
  scalar_t* values = reinterpret_cast<scalar_t*>(&raw);
#pragma unroll
  for (int i = 0; i < CPL; ++i) {
    values[i] = static_cast<scalar_t>(src[i]);
  }
  *reinterpret_cast<raw_t*>(dst) = raw;
}

template <int CPL>
__device__ __forceinline__ void atomic_add_channels(float* dst, const float (&src)[CPL]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kVectorAtomics = CPL % 4 == 0;  // Hopper: one instruction per 4 floats, each float atomic
#else
  constexpr bool kVectorAtomics = false;
#endif
  if constexpr (kVectorAtomics) {
#pragma unroll
    for (int i = 0; i < CPL; i += 4) {
      atomicAdd(reinterpret_cast<float4*>(dst + i), make_float4(src[i], src[i + 1], src[i + 2], src[i + 3]));
    }
  } else {
#pragma unroll
    for (int i = 0; i < CPL; ++i) {
      atomicAdd(dst + i, src[i]);
    }
  }
}

template <int CPL>
__device__ __forceinline__ void atomic_add_channels(double* dst, const double (&src)[CPL]) {
#pragma unroll
  for (int i = 0; i < CPL; ++i) {
    atomicAdd(dst + i, src[i]);
  }
}

// Sum over the G lanes of a group; every lane of the warp must call it.
template <int G, typename T>
__device__ __forceinline__ T group_sum(T value) {
#pragma unroll
  for (int offset = G / 2; offset > 0; offset /= 2) {
    value += __shfl_xor_sync(0xffffffffu, value, offset, G);
  }
  return value;
}

__device__ __forceinline__ float floor_of(float x) { return floorf(x); }
__device__ __forceinline__ double floor_of(double x) { return floor(x); }

// One bilinear sample, as grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False).
// Corners: (top, left), (top, right), (bottom, left), (bottom, right).
template <typename acc_t>
struct BilinearSample {
  int64_t pixel[kCorners];  // index of the corner in S, or -1 when outside the map (it reads zero)
  acc_t weight[kCorners];
  acc_t weight_dy[kCorners];  // d weight / d y, y in pixels
  acc_t weight_dx[kCorners];  // d weight / d x, x in pixels
};

__device__ __forceinline__ Level level_of(const int64_t* spatial_shapes, const int64_t* level_start_index,
                                          int64_t level) {
  return {spatial_shapes[2 * level], spatial_shapes[2 * level + 1], level_start_index[level]};
}

// Fills `sample` for the location (x, y) = (location[0], location[1]) in [0, 1] of `level`. Returns false
// when no corner is inside the map: the point then reads zero and has zero gradients.
template <typename acc_t>
__device__ __forceinline__ bool bilinear_sample(const acc_t* location, const Level& level,
                                                BilinearSample<acc_t>& sample) {
  const int64_t height = level.height;
  const int64_t width = level.width;
  const acc_t y = location[1] * static_cast<acc_t>(height) - acc_t(0.5);
  const acc_t x = location[0] * static_cast<acc_t>(width) - acc_t(0.5);
  // y == -1 (or x == -1) is kept: its far corners have weight 0 but a non-zero gradient, as in grid_sample.
  // The negated test also drops NaN locations.
  if (!(y >= acc_t(-1) && x >= acc_t(-1) && y < static_cast<acc_t>(height) && x < static_cast<acc_t>(width))) {
    return false;
  }
  const acc_t top_f = floor_of(y);
  const acc_t left_f = floor_of(x);
  const int64_t top = static_cast<int64_t>(top_f);
  const int64_t left = static_cast<int64_t>(left_f);
  const acc_t down = y - top_f;  // distance below the top row
  const acc_t across = x - left_f;  // distance right of the left column
  const acc_t up = acc_t(1) - down;
  const acc_t back = acc_t(1) - across;
  const bool top_in = top >= 0;
  const bool bottom_in = top + 1 < height;
  const bool left_in = left >= 0;
  const bool right_in = left + 1 < width;
  const int64_t base = level.start + top * width + left;
  sample.pixel[0] = top_in && left_in ? base : -1;
  sample.pixel[1] = top_in && right_in ? base + 1 : -1;
  sample.pixel[2] = bottom_in && left_in ? base + width : -1;
  sample.pixel[3] = bottom_in && right_in ? base + width + 1 : -1;
  sample.weight[0] = up * back;
  sample.weight[1] = up * across;
  sample.weight[2] = down * back;
  sample.weight[3] = down * across;
  sample.weight_dy[0] = -back;
  sample.weight_dy[1] = -across;
  sample.weight_dy[2] = back;
  sample.weight_dy[3] = across;
  sample.weight_dx[0] = -up;
  sample.weight_dx[1] = up;
  sample.weight_dx[2] = -down;
  sample.weight_dx[3] = down;
  return true;
}

// Where a group's data starts.
struct GroupOffsets {
  int64_t value_row;  // row of (batch, pixel 0, head) in value seen as [N * S * M, D]
  int64_t sample;  // first (level, point) of the group in attention_weights; sampling_locations: twice it
  int64_t output;  // first channel of the group in output and grad_output

  // The row of (batch, pixel, head) in value seen as [N * S * M, D].
  __device__ int64_t row_of(int64_t pixel, const Dims& dims) const { return value_row + pixel * dims.heads; }
};

__device__ __forceinline__ GroupOffsets group_offsets(int64_t group, const Dims& dims, int64_t channels) {
  const int64_t head = group % dims.heads;
  const int64_t batch = group / (dims.queries * dims.heads);
  return {batch * dims.spatial * dims.heads + head, group * dims.samples_per_group(), group * channels};
}

template <typename scalar_t, typename Layout>
__global__ void __launch_bounds__(kThreadsPerBlock) ms_deform_attn_forward_kernel(
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ spatial_shapes,
    const int64_t* __restrict__ level_start_index,
    const at::opmath_type<scalar_t>* __restrict__ sampling_locations,
    const at::opmath_type<scalar_t>* __restrict__ attention_weights,
    scalar_t* __restrict__ output,
    const Dims dims) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int G = Layout::G;
  constexpr int CPL = Layout::CPL;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t group = thread / G;
  if (group >= dims.groups()) {
    return;
  }
  const int lane = static_cast<int>(thread % G);
  const int64_t channels = Layout::EXACT ? G * CPL : dims.channels;
  const GroupOffsets offsets = group_offsets(group, dims, channels);

  for (int64_t channel = lane * CPL; channel < channels; channel += G * CPL) {
    acc_t sum[CPL] = {};
    int64_t sample = offsets.sample;
    for (int64_t level_index = 0; level_index < dims.levels; ++level_index) {
      const Level level = level_of(spatial_shapes, level_start_index, level_index);
      for (int64_t point = 0; point < dims.points; ++point, ++sample) {
        BilinearSample<acc_t> bilinear;
        if (!bilinear_sample(sampling_locations + 2 * sample, level, bilinear)) {
          continue;
        }
        const acc_t attention = attention_weights[sample];
#pragma unroll
        for (int corner = 0; corner < kCorners; ++corner) {
          if (bilinear.pixel[corner] < 0) {
            continue;
          }
          acc_t corner_value[CPL];
          load_channels(value + offsets.row_of(bilinear.pixel[corner], dims) * channels + channel, corner_value);
          const acc_t scale = attention * bilinear.weight[corner];
#pragma unroll
          for (int i = 0; i < CPL; ++i) {
            sum[i] += scale * corner_value[i];
          }
        }
      }
    }
    store_channels(output + offsets.output + channel, sum);
  }
}

// Gradients of the locations and weights, and of value either with atomics into `grad_value` or, when
// DETERMINISTIC, as records (value row, coefficient) per sample corner for a fixed-order gather:
// record 4 * sample + corner, row kNoRow when the corner reads nothing.
template <typename scalar_t, typename Layout, bool DETERMINISTIC>
__global__ void __launch_bounds__(kThreadsPerBlock) ms_deform_attn_backward_kernel(
    const scalar_t* __restrict__ value,
    const int64_t* __restrict__ spatial_shapes,
    const int64_t* __restrict__ level_start_index,
    const at::opmath_type<scalar_t>* __restrict__ sampling_locations,
    const at::opmath_type<scalar_t>* __restrict__ attention_weights,
    const scalar_t* __restrict__ grad_output,
    at::opmath_type<scalar_t>* __restrict__ grad_value,
    at::opmath_type<scalar_t>* __restrict__ grad_sampling_locations,
    at::opmath_type<scalar_t>* __restrict__ grad_attention_weights,
    int32_t* __restrict__ record_rows,
    at::opmath_type<scalar_t>* __restrict__ record_coefficients,
    const Dims dims) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int G = Layout::G;
  constexpr int CPL = Layout::CPL;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  // Lanes past the last group run the loops on group 0 without writing: all lanes take part in the shuffles.
  const bool active = thread / G < dims.groups();
  const int64_t group = active ? thread / G : 0;
  const int lane = static_cast<int>(thread % G);
  const int64_t channels = Layout::EXACT ? G * CPL : dims.channels;
  const GroupOffsets offsets = group_offsets(group, dims, channels);

  acc_t grad[CPL] = {};
  if constexpr (Layout::EXACT) {
    load_channels(grad_output + offsets.output + lane * CPL, grad);
  }
  int64_t sample = offsets.sample;
  for (int64_t level_index = 0; level_index < dims.levels; ++level_index) {
    const Level level = level_of(spatial_shapes, level_start_index, level_index);
    for (int64_t point = 0; point < dims.points; ++point, ++sample) {
      BilinearSample<acc_t> bilinear;
      const bool inside = active && bilinear_sample(sampling_locations + 2 * sample, level, bilinear);
      const acc_t attention = attention_weights[sample];
      // d output / d (attention weight, y, x), summed over this lane's channels.
      acc_t grad_attention = 0;
      acc_t grad_y = 0;
      acc_t grad_x = 0;
      if (inside) {
        for (int64_t channel = lane * CPL; channel < channels; channel += G * CPL) {
          if constexpr (!Layout::EXACT) {
            load_channels(grad_output + offsets.output + channel, grad);
          }
#pragma unroll
          for (int corner = 0; corner < kCorners; ++corner) {
            if (bilinear.pixel[corner] < 0) {
              continue;
            }
            const int64_t element = offsets.row_of(bilinear.pixel[corner], dims) * channels + channel;
            acc_t corner_value[CPL];
            load_channels(value + element, corner_value);
            acc_t dot = 0;
#pragma unroll
            for (int i = 0; i < CPL; ++i) {
              dot += grad[i] * corner_value[i];
            }
            grad_attention += bilinear.weight[corner] * dot;
            grad_y += bilinear.weight_dy[corner] * dot;
            grad_x += bilinear.weight_dx[corner] * dot;
            if constexpr (!DETERMINISTIC) {
              const acc_t scale = attention * bilinear.weight[corner];
              acc_t contribution[CPL];
#pragma unroll
              for (int i = 0; i < CPL; ++i) {
                contribution[i] = scale * grad[i];
              }
              atomic_add_channels(grad_value + element, contribution);
            }
          }
        }
      }
      grad_attention = group_sum<G>(grad_attention);
      grad_y = group_sum<G>(grad_y);
      grad_x = group_sum<G>(grad_x);
      if (active && lane == 0) {
        // x = loc_x * width - 0.5, y = loc_y * height - 0.5.
        grad_attention_weights[sample] = grad_attention;
        grad_sampling_locations[2 * sample] = attention * static_cast<acc_t>(level.width) * grad_x;
        grad_sampling_locations[2 * sample + 1] = attention * static_cast<acc_t>(level.height) * grad_y;
      }
      if constexpr (DETERMINISTIC) {
#pragma unroll
        for (int corner = 0; corner < kCorners; ++corner) {
          if (active && lane == corner % G) {
            const bool reads = inside && bilinear.pixel[corner] >= 0;
            const int64_t record = kCorners * sample + corner;
            record_rows[record] = reads ? static_cast<int32_t>(offsets.row_of(bilinear.pixel[corner], dims)) : kNoRow;
            record_coefficients[record] = reads ? attention * bilinear.weight[corner] : acc_t(0);
          }
        }
      }
    }
  }
}

// The backward of one call: contiguous inputs and grad_output, and the location and weight gradients to fill.
struct BackwardArgs {
  Inputs inputs;
  at::Tensor grad_output;
  at::Tensor grad_sampling_locations, grad_attention_weights;
  Dims dims;
};

template <typename scalar_t, typename Layout, bool DETERMINISTIC>
void launch_backward_kernel(
    const BackwardArgs& args,
    at::opmath_type<scalar_t>* grad_value,
    int32_t* record_rows,
    at::opmath_type<scalar_t>* record_coefficients) {
  using acc_t = at::opmath_type<scalar_t>;
  ms_deform_attn_backward_kernel<scalar_t, Layout, DETERMINISTIC>
      <<<blocks_for(args.dims.groups() * Layout::G), kThreadsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
          args.inputs.value.data_ptr<scalar_t>(),
          args.inputs.spatial_shapes.data_ptr<int64_t>(),
          args.inputs.level_start_index.data_ptr<int64_t>(),
          args.inputs.sampling_locations.data_ptr<acc_t>(),
          args.inputs.attention_weights.data_ptr<acc_t>(),
          args.grad_output.data_ptr<scalar_t>(),
          grad_value,
          args.grad_sampling_locations.data_ptr<acc_t>(),
          args.grad_attention_weights.data_ptr<acc_t>(),
          record_rows,
          record_coefficients,
          args.dims);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Return grad_value and fill the other two gradients of `args` (args.dims.groups() > 0).
at::Tensor backward_with_atomics(const BackwardArgs& args);
at::Tensor backward_deterministic(const BackwardArgs& args);

}  // namespace mask_former
