"""Install detectron2 v0.6 from the registry's ``pb1-detectron2==0.6`` sdist, without its C++ ops.

Run with the interpreter of the environment to install into (``make setup`` does this)::

    .venv/bin/python tools/install_detectron2.py

The sdist's Python files are upstream detectron2 v0.6. This script checks the archive's sha256,
applies the fixes that upstream made after v0.6 for today's NumPy and Pillow, makes the modules
that need the missing ``detectron2._C`` import cleanly and fail clearly when used, and installs
the result (with ``detectron2.projects.point_rend`` / ``deeplab`` / ``panoptic_deeplab``) with pip.

A detectron2 that already imports in this interpreter (for example one built from source) is
left exactly as it is.
"""
import hashlib
import importlib.util
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "pb1-detectron2==0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
MARKER = "_mask_former_patched.py"

MISSING_C_MODULE = '''"""Stand-in for ``detectron2._C`` where detectron2 was installed without its C++ extension."""


class _MissingExtension:
    def __getattr__(self, name):
        raise RuntimeError(
            f"detectron2._C.{name} is unavailable: detectron2 was installed without its C++/CUDA "
            "extension (mask_former's setup installs it that way). Deformable convolution, rotated "
            "boxes and the fast COCO evaluation need it; build detectron2 from source to use them."
        )


_C = _MissingExtension()
HAS_C_EXTENSION = False
'''

IMPORT_C = "from detectron2 import _C\n"
IMPORT_C_OR_STANDIN = (
    "try:\n"
    "    from detectron2 import _C\n"
    "except ImportError:  # installed without the C++ extension: fail when an op is used\n"
    "    from detectron2._mask_former_patched import _C\n"
)

COCO_FALLBACK_ANCHOR = "        self._use_fast_impl = use_fast_impl\n"
COCO_FALLBACK = COCO_FALLBACK_ANCHOR + (
    "        if use_fast_impl and importlib.util.find_spec(\"detectron2._C\") is None:\n"
    "            self._logger.info(\n"
    "                \"detectron2._C is not built: COCO evaluation uses pycocotools' COCOeval \"\n"
    "                \"instead of the fast implementation.\"\n"
    "            )\n"
    "            self._use_fast_impl = False\n"
)

# (file relative to the package, old text, new text, expected number of replacements)
TEXT_PATCHES = [
    ("data/transforms/transform.py", "Image.LINEAR", "Image.BILINEAR", 1),
    ("layers/deform_conv.py", IMPORT_C, IMPORT_C_OR_STANDIN, 1),
    ("layers/rotated_boxes.py", IMPORT_C, IMPORT_C_OR_STANDIN, 1),
    ("layers/roi_align_rotated.py", IMPORT_C, IMPORT_C_OR_STANDIN, 1),
    ("evaluation/fast_eval_api.py", IMPORT_C, IMPORT_C_OR_STANDIN, 1),
    ("evaluation/coco_evaluation.py", "import io\n", "import importlib.util\nimport io\n", 1),
    ("evaluation/coco_evaluation.py", COCO_FALLBACK_ANCHOR, COCO_FALLBACK, 1),
]

# NumPy 1.24 removed these aliases of Python builtins.
NUMPY_ALIASES = re.compile(r"\bnp\.(bool|int|float|str|object)\b(?!_)")
NUMPY_REPLACEMENT = {"bool": "bool", "int": "int", "float": "np.float64", "str": "str", "object": "object"}


def log(message):
    print(f"[install_detectron2] {message}", flush=True)


def working_detectron2():
    """The path of a detectron2 that already imports here, or None."""
    if importlib.util.find_spec("detectron2") is None:
        return None
    result = subprocess.run(
        [sys.executable, "-c", "import detectron2, sys; sys.stdout.write(detectron2.__file__)"],
        capture_output=True,
        text=True,
    )
    return result.stdout if result.returncode == 0 else None


def download_sdist(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-binary", ":all:", "-d", str(dest), SDIST_NAME],
        check=True,
    )
    (archive,) = dest.glob("pb1-detectron2-0.6.tar.gz")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{archive}: sha256 {digest} does not match the expected {SDIST_SHA256}")
    log(f"downloaded {archive.name}, sha256 verified")
    return archive


def patch_text(path: Path, old: str, new: str, expected: int):
    text = path.read_text()
    found = text.count(old)
    if found != expected:
        raise SystemExit(f"{path}: expected {expected} occurrence(s) of {old!r}, found {found}")
    path.write_text(text.replace(old, new))


def patch_numpy_aliases(root: Path) -> int:
    changed = 0
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        new = NUMPY_ALIASES.sub(lambda m: NUMPY_REPLACEMENT[m.group(1)], text)
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


def patch_source(src: Path):
    package = src / "detectron2"
    for relative, old, new, expected in TEXT_PATCHES:
        patch_text(package / relative, old, new, expected)
    changed = patch_numpy_aliases(src)
    (package / MARKER).write_text(MISSING_C_MODULE)
    patch_text(src / "setup.py", "ext_modules=get_extensions(),", "ext_modules=[],", 1)
    log(f"patched {len(TEXT_PATCHES)} places and NumPy aliases in {changed} files")


def main():
    existing = working_detectron2()
    if existing:
        log(f"using the detectron2 already installed at {existing}; leaving it unchanged")
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = download_sdist(Path(tmp))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / "pb1-detectron2-0.6"
        patch_source(src)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(src)],
            check=True,
        )
    log("installed detectron2 0.6 (Python only)")


if __name__ == "__main__":
    main()
