// Bindings of the benchmark-only im2col baseline (see im2col_baseline.cu).
#include <torch/extension.h>

#include <vector>

at::Tensor im2col_forward(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                          const at::Tensor& locations, const at::Tensor& weights);
std::vector<at::Tensor> im2col_backward(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                                        const at::Tensor& locations, const at::Tensor& weights,
                                        const at::Tensor& grad_output);

namespace {

void check_float32_cuda(const std::vector<at::Tensor>& tensors) {
  for (const auto& tensor : tensors) {
    TORCH_CHECK(tensor.is_cuda() && tensor.is_contiguous(), "im2col baseline: inputs must be contiguous CUDA tensors");
  }
  TORCH_CHECK(tensors[0].scalar_type() == at::kFloat, "im2col baseline: float32 only");
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                   const at::Tensor& locations, const at::Tensor& weights) {
  check_float32_cuda({value, shapes, starts, locations, weights});
  return im2col_forward(value, shapes, starts, locations, weights);
}

std::vector<at::Tensor> backward(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
                                 const at::Tensor& locations, const at::Tensor& weights,
                                 const at::Tensor& grad_output) {
  check_float32_cuda({value, shapes, starts, locations, weights, grad_output});
  return im2col_backward(value, shapes, starts, locations, weights, grad_output);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
}
