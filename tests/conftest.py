import logging
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


def in_ci() -> bool:
    """CI runs (``CI`` is "true" or "1") must not skip the golden tests."""
    return os.environ.get("CI", "").lower() in ("true", "1")


@pytest.fixture
def golden_dir():
    """``golden_dir(name)``: the folder of a golden fixture; absent, the test is skipped, or in CI fails."""

    def get(name):
        path = GOLDEN / name
        if not path.is_dir():
            if in_ci():
                pytest.fail(
                    f"golden fixture {path} is absent, and CI={os.environ['CI']} does not skip golden tests: "
                    f"build the fixtures into {GOLDEN} (see its README.md)",
                    pytrace=False,
                )
            pytest.skip(f"golden fixture {path} is absent")
        return path

    return get


@pytest.fixture
def logs(caplog, monkeypatch):
    """``caplog``, also for the loggers that detectron2's ``setup_logger`` (run by the demo, the
    trainer, earlier tests) stops from propagating to the root logger."""
    for name in ("fvcore", "detectron2", "mask_former"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    caplog.set_level(logging.WARNING)
    return caplog
