"""Install mask_former. No compiler is needed: the CUDA deformable-attention extension is built
only where a CUDA toolchain is present and either a GPU is visible or FORCE_CUDA=1."""
import glob
import importlib.util
import os

from setuptools import find_packages, setup


CUDA_SOURCES = os.path.join("mask_former", "ops", "csrc")
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def cuda_build_environment():
    """Defaults for building without a GPU: the toolkit in /usr/local/cuda (torch would otherwise guess
    the prefix of an ``nvcc`` wrapper) and the architectures to compile for."""
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.isdir("/usr/local/cuda"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)


def cuda_library_include_dirs():
    """``<site-packages>/nvidia/cu<major>/include`` from torch's ``nvidia`` wheels: the CUDA library headers
    (cublas, cusparse, ...) that torch's headers include, for a toolkit that has only the compiler."""
    import torch

    spec = importlib.util.find_spec("nvidia")
    if spec is None or torch.version.cuda is None:
        return []
    folder = "cu" + torch.version.cuda.split(".")[0]
    candidates = [os.path.join(path, folder, "include") for path in spec.submodule_search_locations]
    return [path for path in candidates if os.path.isdir(path)]


def cuda_extensions():
    """The ``mask_former._C`` extension where CUDA can be compiled: a visible GPU, or FORCE_CUDA=1."""
    if os.environ.get("FORCE_CUDA", "0") != "1":
        if importlib.util.find_spec("torch") is None:
            return [], {}
        import torch

        if not torch.cuda.is_available():
            return [], {}
    cuda_build_environment()
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    sources = sorted(glob.glob(os.path.join(CUDA_SOURCES, "*.cu")) + glob.glob(os.path.join(CUDA_SOURCES, "*.cpp")))
    extension = CUDAExtension(
        "mask_former._C",
        sources,
        include_dirs=[os.path.abspath(CUDA_SOURCES)] + cuda_library_include_dirs(),
        depends=sorted(glob.glob(os.path.join(CUDA_SOURCES, "*.cuh")) + glob.glob(os.path.join(CUDA_SOURCES, "*.h"))),
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
