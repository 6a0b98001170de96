"""The command line shared by the tools that convert ImageNet checkpoints to detectron2 ``.pkl`` files."""
import argparse
import pickle
import sys
from typing import Callable, Dict

import numpy as np
import torch


def run_conversion(
    argv,
    *,
    description: str,
    input_help: str,
    load: Callable[[str], Dict[str, torch.Tensor]],
    convert: Callable[[Dict[str, torch.Tensor]], Dict[str, np.ndarray]],
    author: str,
) -> int:
    """Parse ``input output``, ``load`` the input, write ``{"model": convert(...), "__author__": author,
    "matching_heuristics": True}`` to the output. Returns the exit code (2 on an unreadable input)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help=input_help)
    parser.add_argument("output", help="detectron2 checkpoint to write (.pkl)")
    args = parser.parse_args(argv)
    try:
        state_dict = load(args.input)
    except (OSError, ValueError, pickle.UnpicklingError) as e:
        print(f"error: cannot convert {args.input!r}: {e}", file=sys.stderr)
        return 2
    model = convert(state_dict)
    with open(args.output, "wb") as f:
        pickle.dump({"model": model, "__author__": author, "matching_heuristics": True}, f)
    print(f"Wrote {len(model)} tensors to {args.output}")
    return 0
