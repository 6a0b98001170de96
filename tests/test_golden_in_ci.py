"""The golden_dir fixture: a missing ../shared/golden skips the golden tests, except in CI where it fails."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

GOLDEN_TEST = '''
def test_uses_a_fixture(golden_dir):
    assert golden_dir("m2f_coco_panoptic").is_dir()
'''


@pytest.fixture
def repo_without_golden(tmp_path):
    """A copy of tests/conftest.py and one golden test in a repository with no ../shared/golden."""
    tests = tmp_path / "repo" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", tests / "conftest.py")
    (tests / "test_uses_golden.py").write_text(GOLDEN_TEST)
    return tests


def run_pytest(tests, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update({"CI": ci} if ci is not None else {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tests)],
        cwd=tests.parent, capture_output=True, text=True, env=env,
    )


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_golden_fixtures_fail_in_ci(repo_without_golden, ci):
    result = run_pytest(repo_without_golden, ci)
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout
    assert f"golden fixture {repo_without_golden.parent.parent / 'shared' / 'golden' / 'm2f_coco_panoptic'} is absent" \
        in result.stdout
    assert "does not skip golden tests" in result.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_missing_golden_fixtures_skip_outside_ci(repo_without_golden, ci):
    result = run_pytest(repo_without_golden, ci)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout and "is absent" in result.stdout
