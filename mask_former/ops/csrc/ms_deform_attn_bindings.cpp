// Python bindings of mask_former._C (CUDA).
#include "ms_deform_attn.h"
#include "ms_deform_attn_bindings.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mask_former CUDA ops: multi-scale deformable attention";
  mask_former::define_ms_deform_attn(m, at::kCUDA, &mask_former::ms_deform_attn_forward_cuda,
                                     &mask_former::ms_deform_attn_backward_cuda);
}
