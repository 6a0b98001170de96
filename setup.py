"""Install mask_former. No compiler is needed: the CUDA deformable-attention extension is built
only where a CUDA toolchain is present and either a GPU is visible or FORCE_CUDA=1."""
import glob
import os

from setuptools import find_packages, setup


def cuda_extensions():
    if os.environ.get("FORCE_CUDA", "0") != "1":
        try:
            import torch
        except ImportError:
            return [], {}
        if not torch.cuda.is_available():
            return [], {}
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    sources = glob.glob(os.path.join("mask_former", "ops", "csrc", "*.cu")) + glob.glob(
        os.path.join("mask_former", "ops", "csrc", "*.cpp")
    )
    if not sources:
        return [], {}
    extension = CUDAExtension(
        "mask_former._C",
        sources,
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
    )
    return [extension], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extensions()

setup(
    name="mask_former",
    version="0.1.0",
    description="MaskFormer and Mask2Former as a Detectron2 extension",
    packages=find_packages(include=["mask_former", "mask_former.*"]),
    python_requires=">=3.9",
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
