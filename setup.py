"""Install mask_former. No compiler is needed: the CPU deformable-attention extension
(``mask_former._C_cpu``) is built where torch and a C++ compiler are present, and installing goes on
without it (with a message) when it fails to build; the CUDA one (``mask_former._C``) only where a CUDA
toolchain is present and either a GPU is visible or FORCE_CUDA=1. MASK_FORMER_NO_CPU_OP=1 skips the CPU one."""
import glob
import importlib.util
import os
import shutil
import sys

from setuptools import find_packages, setup

CUDA_SOURCES = os.path.join("mask_former", "ops", "csrc")
CPU_SOURCES = os.path.join(CUDA_SOURCES, "cpu")
CPU_EXTENSION = "mask_former._C_cpu"
# Built where no GPU is visible (and TORCH_CUDA_ARCH_LIST is unset): Turing (T4, sm_75), A100 (sm_80),
# Ampere/Ada consumer and workstation cards (sm_86; sm_89 runs its code), Hopper (sm_90), and PTX
# of sm_90 that newer GPUs compile when loading. CUDA 13 has no targets older than sm_75.
DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;9.0+PTX"


def gpu_visible() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def cuda_build_environment():
    """The toolkit in /usr/local/cuda (torch would otherwise guess the prefix of an ``nvcc`` wrapper), and,
    only where no GPU is visible, the architectures to compile for: with a GPU, torch's own detection
    (the visible GPUs' architectures) is left alone."""
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.isdir("/usr/local/cuda"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    if not gpu_visible():
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
    if os.environ.get("FORCE_CUDA", "0") != "1" and not gpu_visible():
        return []
    cuda_build_environment()
    from torch.utils.cpp_extension import CUDAExtension

    sources = sorted(glob.glob(os.path.join(CUDA_SOURCES, "*.cu")) + glob.glob(os.path.join(CUDA_SOURCES, "*.cpp")))
    extension = CUDAExtension(
        "mask_former._C",
        sources,
        include_dirs=[os.path.abspath(CUDA_SOURCES)] + cuda_library_include_dirs(),
        depends=sorted(glob.glob(os.path.join(CUDA_SOURCES, "*.cuh")) + glob.glob(os.path.join(CUDA_SOURCES, "*.h"))),
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
    )
    return [extension]


def cpu_extensions():
    """The ``mask_former._C_cpu`` extension (OpenMP through ATen's parallel_for) where torch and a C++
    compiler are present."""
    if os.environ.get("MASK_FORMER_NO_CPU_OP", "0") == "1":
        return []
    if importlib.util.find_spec("torch") is None:
        print(f"[mask_former] torch is not installed: not building {CPU_EXTENSION}", file=sys.stderr)
        return []
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        print(
            f"[mask_former] no C++ compiler ({compiler!r}): not building {CPU_EXTENSION}; deformable attention "
            "on the CPU uses the PyTorch reference",
            file=sys.stderr,
        )
        return []
    from torch.utils.cpp_extension import CppExtension

    extension = CppExtension(
        CPU_EXTENSION,
        sorted(glob.glob(os.path.join(CPU_SOURCES, "*.cpp"))),
        include_dirs=[os.path.abspath(CUDA_SOURCES)],
        depends=sorted(glob.glob(os.path.join(CUDA_SOURCES, "*.h"))),
        extra_compile_args={"cxx": ["-O3", "-g0", "-fopenmp"]},
        extra_link_args=["-fopenmp"],
    )
    return [extension]


def build_ext_command():
    """torch's BuildExtension, except that a failed build of the CPU extension (in torch's compiler checks or
    in compiling it) is a message, not an error: the package works without it."""
    from torch.utils.cpp_extension import BuildExtension

    def skip_cpu_extension(error):
        print(
            f"[mask_former] building {CPU_EXTENSION} failed ({type(error).__name__}: {error}); installing without "
            "it: deformable attention on the CPU uses the PyTorch reference",
            file=sys.stderr,
        )

    class BuildExtensionCpuOptional(BuildExtension):
        def build_extensions(self):
            try:
                return super().build_extensions()
            except Exception as error:  # torch's compiler checks: retry without the CPU extension
                if not any(ext.name == CPU_EXTENSION for ext in self.extensions):
                    raise
                skip_cpu_extension(error)
                self.extensions = [ext for ext in self.extensions if ext.name != CPU_EXTENSION]
                if self.extensions:
                    super().build_extensions()

        def build_extension(self, ext):
            if ext.name != CPU_EXTENSION:
                return super().build_extension(ext)
            try:
                return super().build_extension(ext)
            except Exception as error:  # any compiler or toolchain failure: fall back to the reference
                skip_cpu_extension(error)
                self.extensions = [other for other in self.extensions if other.name != CPU_EXTENSION]

    return BuildExtensionCpuOptional


ext_modules = cuda_extensions() + cpu_extensions()
cmdclass = {"build_ext": build_ext_command()} if ext_modules else {}

setup(
    name="mask_former",
    version="0.1.0",
    description="MaskFormer and Mask2Former as a Detectron2 extension",
    packages=find_packages(include=["mask_former", "mask_former.*"]),
    python_requires=">=3.9",
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
