// Multi-scale deformable attention on the CPU (extension mask_former._C_cpu): forward and backward in one
// pass each, sampling, weighting and accumulating every point's four bilinear corners straight into the
// output (or the gradients) without materializing the sampled values.
//
// Shapes as in ../ms_deform_attn.h. Sampling is grid_sample(bilinear, zeros, align_corners=False): pixel
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

#include "ms_deform_attn_checks.h"

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

struct Dims {
  int64_t batch, spatial, heads, channels, queries, levels, points;
};

Dims dims_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0), value.size(1), value.size(2), value.size(3),
          sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
}

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

template <typename acc_t>
MASK_FORMER_ALWAYS_INLINE inline Corners<acc_t> corners_of(acc_t loc_x, acc_t loc_y, int64_t height, int64_t width) {
  Corners<acc_t> corners;
  const acc_t x = loc_x * static_cast<acc_t>(width) - acc_t(0.5);
  const acc_t y = loc_y * static_cast<acc_t>(height) - acc_t(0.5);
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

// Per-level sizes, read once per call.
struct Level {
  int64_t height, width, start;
};

std::vector<Level> levels_of(const at::Tensor& spatial_shapes, const at::Tensor& level_start_index) {
  const at::Tensor shapes = spatial_shapes.contiguous();
  const at::Tensor starts = level_start_index.contiguous();
  const int64_t* shape = shapes.data_ptr<int64_t>();
  const int64_t* start = starts.data_ptr<int64_t>();
  std::vector<Level> levels(shapes.size(0));
  for (size_t l = 0; l < levels.size(); ++l) {
    levels[l] = {shape[2 * l], shape[2 * l + 1], start[l]};
  }
  return levels;
}

void check_levels_fit(const std::vector<Level>& levels, int64_t spatial) {
  for (size_t l = 0; l < levels.size(); ++l) {
    const Level& level = levels[l];
    TORCH_CHECK(level.height >= 0 && level.width >= 0 && level.start >= 0 &&
                    level.start + level.height * level.width <= spatial,
                "ms_deform_attn: level ", l, " (H=", level.height, ", W=", level.width, ", start=", level.start,
                ") does not fit in value's S=", spatial);
  }
}

template <typename scalar_t>
struct ForwardArgs {
  const scalar_t* value;
  const std::vector<Level>& levels;
  const at::opmath_type<scalar_t>* locations;
  const at::opmath_type<scalar_t>* weights;
  scalar_t* output;
  const Dims& d;
};

// The (batch, query) pairs [begin, end).
template <typename scalar_t>
MASK_FORMER_ALWAYS_INLINE inline void forward_range(int64_t begin, int64_t end, const ForwardArgs<scalar_t>& a) {
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
          const auto corners = corners_of(a.locations[2 * s], a.locations[2 * s + 1], level.height, level.width);
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

// The types with per-ISA clones of the range functions (overloads, one per type).
template <typename scalar_t>
constexpr bool kHasIsaClones =
    std::is_same_v<scalar_t, float> || std::is_same_v<scalar_t, at::BFloat16> || std::is_same_v<scalar_t, at::Half>;

MASK_FORMER_ISA_CLONES void forward_range_cloned(int64_t begin, int64_t end, const ForwardArgs<float>& a) {
  forward_range<float>(begin, end, a);
}

MASK_FORMER_ISA_CLONES void forward_range_cloned(int64_t begin, int64_t end, const ForwardArgs<at::BFloat16>& a) {
  forward_range<at::BFloat16>(begin, end, a);
}

MASK_FORMER_ISA_CLONES void forward_range_cloned(int64_t begin, int64_t end, const ForwardArgs<at::Half>& a) {
  forward_range<at::Half>(begin, end, a);
}

template <typename scalar_t>
void forward_kernel(const ForwardArgs<scalar_t>& args) {
  at::parallel_for(0, args.d.batch * args.d.queries, 1, [&](int64_t begin, int64_t end) {
    if constexpr (kHasIsaClones<scalar_t>) {
      forward_range_cloned(begin, end, args);
    } else {
      forward_range<scalar_t>(begin, end, args);
    }
  });
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

template <typename scalar_t>
struct BackwardArgs {
  const scalar_t* value;
  const std::vector<Level>& levels;
  const at::opmath_type<scalar_t>* locations;
  const at::opmath_type<scalar_t>* weights;
  const scalar_t* grad_output;
  at::opmath_type<scalar_t>* grad_value;
  at::opmath_type<scalar_t>* grad_locations;
  at::opmath_type<scalar_t>* grad_weights;
  const Dims& d;
};

// The (batch, head, level) triples [begin, end).
template <typename scalar_t>
MASK_FORMER_ALWAYS_INLINE inline void backward_range(int64_t begin, int64_t end, const BackwardArgs<scalar_t>& a) {
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
        const auto corners = corners_of(a.locations[2 * s], a.locations[2 * s + 1], level.height, level.width);
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

MASK_FORMER_ISA_CLONES void backward_range_cloned(int64_t begin, int64_t end, const BackwardArgs<float>& a) {
  backward_range<float>(begin, end, a);
}

MASK_FORMER_ISA_CLONES void backward_range_cloned(int64_t begin, int64_t end, const BackwardArgs<at::BFloat16>& a) {
  backward_range<at::BFloat16>(begin, end, a);
}

MASK_FORMER_ISA_CLONES void backward_range_cloned(int64_t begin, int64_t end, const BackwardArgs<at::Half>& a) {
  backward_range<at::Half>(begin, end, a);
}

template <typename scalar_t>
void backward_kernel(const BackwardArgs<scalar_t>& args) {
  at::parallel_for(0, args.d.batch * args.d.heads * args.d.levels, 1, [&](int64_t begin, int64_t end) {
    if constexpr (kHasIsaClones<scalar_t>) {
      backward_range_cloned(begin, end, args);
    } else {
      backward_range<scalar_t>(begin, end, args);
    }
  });
}

at::Tensor forward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, at::kCPU);
  const Dims dims = dims_of(value, sampling_locations);
  const std::vector<Level> levels = levels_of(spatial_shapes, level_start_index);
  check_levels_fit(levels, dims.spatial);
  const at::Tensor value_c = value.contiguous();
  const at::Tensor locations_c = sampling_locations.contiguous();
  const at::Tensor weights_c = attention_weights.contiguous();
  at::Tensor output = at::empty({dims.batch, dims.queries, dims.heads * dims.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t>({value_c.data_ptr<scalar_t>(), levels, locations_c.data_ptr<acc_t>(),
                              weights_c.data_ptr<acc_t>(), output.data_ptr<scalar_t>(), dims});
  });
  return output;
}

// `deterministic` is accepted for the CUDA binding's signature: the CPU backward always is.
std::vector<at::Tensor> backward(
    const at::Tensor& value,
    const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index,
    const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights,
    const at::Tensor& grad_output,
    bool /*deterministic*/) {
  check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, at::kCPU);
  check_grad_output(grad_output, value, sampling_locations);
  const Dims dims = dims_of(value, sampling_locations);
  const std::vector<Level> levels = levels_of(spatial_shapes, level_start_index);
  check_levels_fit(levels, dims.spatial);
  const at::Tensor value_c = value.contiguous();
  const at::Tensor locations_c = sampling_locations.contiguous();
  const at::Tensor weights_c = attention_weights.contiguous();
  const at::Tensor grad_output_c = grad_output.contiguous();
  const auto accumulation = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(accumulation));
  at::Tensor grad_locations = at::empty(sampling_locations.sizes(), sampling_locations.options());
  at::Tensor grad_weights = at::empty(attention_weights.sizes(), attention_weights.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t>({value_c.data_ptr<scalar_t>(), levels, locations_c.data_ptr<acc_t>(),
                               weights_c.data_ptr<acc_t>(), grad_output_c.data_ptr<scalar_t>(),
                               grad_value.data_ptr<acc_t>(), grad_locations.data_ptr<acc_t>(),
                               grad_weights.data_ptr<acc_t>(), dims});
  });
  return {grad_value.to(value.scalar_type()), grad_locations, grad_weights};
}

}  // namespace
}  // namespace mask_former

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mask_former CPU ops: multi-scale deformable attention";
  m.def("ms_deform_attn_forward", &mask_former::forward, "Multi-scale deformable attention forward -> [N, Lq, M * D]",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"));
  m.def("ms_deform_attn_backward", &mask_former::backward,
        "Gradients [value, sampling_locations, attention_weights] of multi-scale deformable attention",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"), py::arg("grad_output"), py::arg("deterministic"));
}
