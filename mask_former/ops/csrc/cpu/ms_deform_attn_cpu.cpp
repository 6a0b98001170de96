// Multi-scale deformable attention on the CPU (extension mask_former._C_cpu): forward and backward in one
// pass each, sampling, weighting and accumulating every point's four bilinear corners straight into the
// output (or the gradients) without materializing the sampled values.
//
// Inputs and shapes as in ../ms_deform_attn_inputs.h. Sampling is grid_sample(bilinear, zeros, align_corners=False): pixel
// x = loc_x * W - 0.5, corners outside the map read zero.
//
// Threads (at::parallel_for, so torch.get_num_threads() applies): the forward splits the (batch, query)
// pairs. The backward splits the (batch, head, level) triples: each owns a disjoint slice of grad_value
// (its level's pixels of its head) and of the location / weight gradients, and walks its queries in order,
// so the value-gradient scatter needs no atomics or per-thread copies and is bit-identical from run to run.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "ms_deform_attn_bindings.h"

// float, bfloat16 and float16 (the types of float32 and autocast inference; both half types accumulate in
// float32) are compiled once per x86-64 level (AVX-512, AVX2 + FMA, baseline) and the loader picks the best
// one the machine runs (GCC function multi-versioning): a wheel or build stays portable and still uses wide
// vectors, which also widen the half types to float32 a vector at a time. The per-thread range functions are
// the cloned unit, so the dispatch costs one indirect call per thread, and what they call is inlined into
// each clone. float64 (tests, gradcheck) takes the baseline build.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define MASK_FORMER_ISA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MASK_FORMER_ISA_CLONES
#endif
#if defined(__GNUC__)
#define MASK_FORMER_ALWAYS_INLINE __attribute__((always_inline))
#else
#define MASK_FORMER_ALWAYS_INLINE
#endif

namespace mask_former {
namespace {

constexpr int kCorners = 4;

// The corners of one sampling point that fall inside its map: their pixel index in the level, bilinear
// weight, and the weight's derivatives along the pixel x and y.
template <typename acc_t>
struct Corners {
  int count = 0;
  int64_t pixel[kCorners];
  acc_t weight[kCorners];
  acc_t d_weight_dx[kCorners];
  acc_t d_weight_dy[kCorners];
};

// `location` points to (x, y) in [0, 1].
template <typename acc_t>
MASK_FORMER_ALWAYS_INLINE inline Corners<acc_t> corners_of(const acc_t* location, const Level& level) {
  const int64_t height = level.height;
  const int64_t width = level.width;
  Corners<acc_t> corners;
  const acc_t x = location[0] * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t y = location[1] * static_cast<acc_t>(height) - acc_t(0.5);
  // Beyond [-1, W] x [-1, H] every corner is outside. A point on x = -1 keeps its inside corner, of weight 0
  // but with a location gradient, as in grid_sample. Written so that NaN locations read nothing.
  if (!(x >= acc_t(-1) && y >= acc_t(-1) && x <= static_cast<acc_t>(width) && y <= static_cast<acc_t>(height))) {
    return corners;
  }
  const acc_t x_floor = std::floor(x);
  const acc_t y_floor = std::floor(y);
  const int64_t x0 = static_cast<int64_t>(x_floor);
  const int64_t y0 = static_cast<int64_t>(y_floor);
  const acc_t fx = x - x_floor;
  const acc_t fy = y - y_floor;
  const int64_t xs[kCorners] = {x0, x0 + 1, x0, x0 + 1};
  const int64_t ys[kCorners] = {y0, y0, y0 + 1, y0 + 1};
  const acc_t wx[kCorners] = {1 - fx, fx, 1 - fx, fx};
  const acc_t wy[kCorners] = {1 - fy, 1 - fy, fy, fy};
  const acc_t dwx[kCorners] = {-1, 1, -1, 1};
  const acc_t dwy[kCorners] = {-1, -1, 1, 1};
  for (int c = 0; c < kCorners; ++c) {
    if (xs[c] < 0 || xs[c] >= width || ys[c] < 0 || ys[c] >= height) {
      continue;
    }
    corners.pixel[corners.count] = ys[c] * width + xs[c];
    corners.weight[corners.count] = wx[c] * wy[c];
    corners.d_weight_dx[corners.count] = dwx[c] * wy[c];
    corners.d_weight_dy[corners.count] = wx[c] * dwy[c];
    ++corners.count;
  }
  return corners;
}

// The inputs as the passes read them: contiguous, with their sizes and the levels' (read once per call,
// checked to fit in value).
struct Operands {
  Inputs inputs;
  Dims dims;
  std::vector<Level> levels;
};

Operands operands_of(const Inputs& inputs) {
  Operands operands{inputs.contiguous(), inputs.dims(), {}};
  const int64_t* shape = operands.inputs.spatial_shapes.data_ptr<int64_t>();
  const int64_t* start = operands.inputs.level_start_index.data_ptr<int64_t>();
  operands.levels.resize(operands.inputs.spatial_shapes.size(0));
  for (size_t l = 0; l < operands.levels.size(); ++l) {
    const Level level{shape[2 * l], shape[2 * l + 1], start[l]};
    TORCH_CHECK(level.height >= 0 && level.width >= 0 && level.start >= 0 &&
                    level.start + level.height * level.width <= operands.dims.spatial,
                "ms_deform_attn: level ", l, " (H=", level.height, ", W=", level.width, ", start=", level.start,
                ") does not fit in value's S=", operands.dims.spatial);
    operands.levels[l] = level;
  }
  return operands;
}

// What a pass reads and writes: the forward writes `output`, the backward reads `grad_output` and writes
// the three gradients (the other pass's pointers are null).
template <typename scalar_t>
struct Args {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* value;
  const std::vector<Level>& levels;
  const acc_t* locations;
  const acc_t* weights;
  const Dims& d;
  scalar_t* output;
  const scalar_t* grad_output;
  acc_t* grad_value;
  acc_t* grad_locations;
  acc_t* grad_weights;
};

template <typename scalar_t>
Args<scalar_t> args_of(const Operands& operands) {
  using acc_t = at::opmath_type<scalar_t>;
  const Inputs& in = operands.inputs;
  return {in.value.data_ptr<scalar_t>(), operands.levels, in.sampling_locations.data_ptr<acc_t>(),
          in.attention_weights.data_ptr<acc_t>(), operands.dims, nullptr, nullptr, nullptr, nullptr, nullptr};
}

// The (batch, query) pairs [begin, end).
template <typename scalar_t>
MASK_FORMER_ALWAYS_INLINE inline void forward_range(int64_t begin, int64_t end, const Args<scalar_t>& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const Dims& d = a.d;
  const int64_t pixel_stride = d.heads * d.channels;
  std::vector<acc_t> accumulator(d.channels);
  acc_t* acc = accumulator.data();
  for (int64_t nq = begin; nq < end; ++nq) {
    const int64_t n = nq / d.queries;
    for (int64_t m = 0; m < d.heads; ++m) {
      std::fill(accumulator.begin(), accumulator.end(), acc_t(0));
      const int64_t sample = (nq * d.heads + m) * d.levels * d.points;
      for (int64_t l = 0; l < d.levels; ++l) {
        const Level& level = a.levels[l];
        const scalar_t* level_value = a.value + (n * d.spatial + level.start) * pixel_stride + m * d.channels;
        for (int64_t p = 0; p < d.points; ++p) {
          const int64_t s = sample + l * d.points + p;
          const auto corners = corners_of(a.locations + 2 * s, level);
          for (int c = 0; c < corners.count; ++c) {
            const acc_t w = a.weights[s] * corners.weight[c];
            const scalar_t* v = level_value + corners.pixel[c] * pixel_stride;
            for (int64_t k = 0; k < d.channels; ++k) {
              acc[k] += w * static_cast<acc_t>(v[k]);
            }
          }
        }
      }
      scalar_t* out = a.output + (nq * d.heads + m) * d.channels;
      for (int64_t k = 0; k < d.channels; ++k) {
        out[k] = static_cast<scalar_t>(acc[k]);
      }
    }
  }
}

// sum_k a[k] * b[k] in kDotLanes independent partial sums, added up in a fixed order at the end: a single
// running sum is one dependent chain of adds that the compiler may not reorder (and so not vectorize).
constexpr int64_t kDotLanes = 8;

template <typename acc_t, typename scalar_t>
MASK_FORMER_ALWAYS_INLINE inline acc_t dot_product(const acc_t* a, const scalar_t* b, int64_t n) {
  acc_t lanes[kDotLanes] = {};
  int64_t k = 0;
  for (; k + kDotLanes <= n; k += kDotLanes) {
    for (int64_t j = 0; j < kDotLanes; ++j) {
      lanes[j] += a[k + j] * static_cast<acc_t>(b[k + j]);
    }
  }
  for (; k < n; ++k) {
    lanes[k % kDotLanes] += a[k] * static_cast<acc_t>(b[k]);
  }
  acc_t sum = 0;
  for (int64_t j = 0; j < kDotLanes; ++j) {
    sum += lanes[j];
  }
  return sum;
}

// The (batch, head, level) triples [begin, end).
template <typename scalar_t>
MASK_FORMER_ALWAYS_INLINE inline void backward_range(int64_t begin, int64_t end, const Args<scalar_t>& a) {
  using acc_t = at::opmath_type<scalar_t>;
  const Dims& d = a.d;
  const int64_t pixel_stride = d.heads * d.channels;
  std::vector<acc_t> grad_buffer(d.channels);
  acc_t* g = grad_buffer.data();
  for (int64_t item = begin; item < end; ++item) {
    const int64_t l = item % d.levels;
    const int64_t m = (item / d.levels) % d.heads;
    const int64_t n = item / (d.levels * d.heads);
    const Level& level = a.levels[l];
    const int64_t level_offset = (n * d.spatial + level.start) * pixel_stride + m * d.channels;
    const scalar_t* level_value = a.value + level_offset;
    acc_t* level_grad_value = a.grad_value + level_offset;
    for (int64_t q = 0; q < d.queries; ++q) {
      const int64_t nqm = (n * d.queries + q) * d.heads + m;
      const scalar_t* go = a.grad_output + nqm * d.channels;
      for (int64_t k = 0; k < d.channels; ++k) {
        g[k] = static_cast<acc_t>(go[k]);
      }
      for (int64_t p = 0; p < d.points; ++p) {
        const int64_t s = (nqm * d.levels + l) * d.points + p;
        const auto corners = corners_of(a.locations + 2 * s, level);
        const acc_t attention = a.weights[s];
        acc_t grad_weight = 0, grad_x = 0, grad_y = 0;
        for (int c = 0; c < corners.count; ++c) {
          const scalar_t* v = level_value + corners.pixel[c] * pixel_stride;
          acc_t* gv = level_grad_value + corners.pixel[c] * pixel_stride;
          const acc_t scale = attention * corners.weight[c];
          for (int64_t k = 0; k < d.channels; ++k) {
            gv[k] += scale * g[k];
          }
          const acc_t dot = dot_product(g, v, d.channels);
          grad_weight += corners.weight[c] * dot;
          grad_x += corners.d_weight_dx[c] * dot;
          grad_y += corners.d_weight_dy[c] * dot;
        }
        a.grad_weights[s] = grad_weight;
        // d pixel_x / d loc_x = W, d pixel_y / d loc_y = H.
        a.grad_locations[2 * s] = attention * grad_x * static_cast<acc_t>(level.width);
        a.grad_locations[2 * s + 1] = attention * grad_y * static_cast<acc_t>(level.height);
      }
    }
  }
}

enum class Pass { kForward, kBackward };

template <typename scalar_t>
MASK_FORMER_ALWAYS_INLINE inline void pass_range(Pass pass, int64_t begin, int64_t end, const Args<scalar_t>& a) {
  if (pass == Pass::kForward) {
    forward_range<scalar_t>(begin, end, a);
  } else {
    backward_range<scalar_t>(begin, end, a);
  }
}

// The types with per-ISA clones of pass_range (overloads, one per type).
template <typename scalar_t>
constexpr bool kHasIsaClones =
    std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, at::BFloat16> || std::is_same_v<scalar_t, at::Half>;

MASK_FORMER_ISA_CLONES void pass_range_cloned(Pass pass, int64_t begin, int64_t end, const Args<float>& a) {
  pass_range<float>(pass, begin, end, a);
}

MASK_FORMER_ISA_CLONES void pass_range_cloned(Pass pass, int64_t begin, int64_t end, const Args<at::BFloat16>& a) {
  pass_range<at::BFloat16>(pass, begin, end, a);
}

MASK_FORMER_ISA_CLONES void pass_range_cloned(Pass pass, int64_t begin, int64_t end, const Args<at::Half>& a) {
  pass_range<at::Half>(pass, begin, end, a);
}

// Runs `pass` over its work items: (batch, query) pairs for the forward, (batch, head, level) triples for
// the backward.
template <typename scalar_t>
void run_pass(Pass pass, const Args<scalar_t>& args) {
  const Dims& d = args.d;
  const int64_t items = pass == Pass::kForward ? d.batch * d.queries : d.batch * d.heads * d.levels;
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    if constexpr (kHasIsaClones<scalar_t>) {
      pass_range_cloned(pass, begin, end, args);
    } else {
      pass_range<scalar_t>(pass, begin, end, args);
    }
  });
}

at::Tensor forward(const Inputs& inputs) {
  const Operands operands = operands_of(inputs);
  const Dims& dims = operands.dims;
  const at::Tensor& value = operands.inputs.value;
  at::Tensor output = at::empty({dims.batch, dims.queries, dims.heads * dims.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    Args<scalar_t> args = args_of<scalar_t>(operands);
    args.output = output.data_ptr<scalar_t>();
    run_pass(Pass::kForward, args);
  });
  return output;
}

// `deterministic` is accepted for the CUDA binding's signature: the CPU backward always is.
std::vector<at::Tensor> backward(const Inputs& inputs, const at::Tensor& grad_output, bool /*deterministic*/) {
  const Operands operands = operands_of(inputs);
  const at::Tensor& value = operands.inputs.value;
  const at::Tensor grad_output_c = grad_output.contiguous();
  const auto accumulation = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(accumulation));
  at::Tensor grad_locations = at::empty(inputs.sampling_locations.sizes(), inputs.sampling_locations.options());
  at::Tensor grad_weights = at::empty(inputs.attention_weights.sizes(), inputs.attention_weights.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    Args<scalar_t> args = args_of<scalar_t>(operands);
    args.grad_output = grad_output_c.data_ptr<scalar_t>();
    args.grad_value = grad_value.data_ptr<acc_t>();
    args.grad_locations = grad_locations.data_ptr<acc_t>();
    args.grad_weights = grad_weights.data_ptr<acc_t>();
    run_pass(Pass::kBackward, args);
  });
  return {grad_value.to(value.scalar_type()), grad_locations, grad_weights};
}

}  // namespace
}  // namespace mask_former

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mask_former CPU ops: multi-scale deformable attention";
  mask_former::define_ms_deform_attn(m, at::kCPU, &mask_former::forward, &mask_former::backward);
}
