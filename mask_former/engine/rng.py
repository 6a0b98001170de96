"""Seeds derived from a base seed and a position, so that random streams can be replayed exactly."""
import contextlib
import random
from typing import Iterator

import numpy as np
import torch


def derive_seed(base_seed: int, *keys: int) -> int:
    """A 32-bit seed that depends only on ``base_seed`` and ``keys`` (e.g. iteration, position)."""
    return int(np.random.SeedSequence([base_seed, *keys]).generate_state(1, dtype=np.uint32)[0])


def seed_rngs(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def isolated_rngs(seed: int) -> Iterator[None]:
    """Run a block with the CPU's global random generators (Python, NumPy, torch) seeded by
    ``seed``, restoring their states afterwards, so that the block neither depends on nor disturbs
    the surrounding random stream. Meant for CPU work such as data augmentation."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
