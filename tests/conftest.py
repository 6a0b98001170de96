import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "golden"

# torch.jit.script, used by detectron2 0.6 at import time, warns on every import in torch 2.x.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
os.environ.setdefault("DETECTRON2_DATASETS", str(REPO / "datasets"))


@pytest.fixture
def golden_dir():
    def get(name):
        path = GOLDEN / name
        if not path.is_dir():
            pytest.skip(f"golden fixture {path} is absent")
        return path

    return get
