"""A CPU inference fast path on and off in one process, alternating, on the same model and image:

    .venv/bin/python benchmarks/bench_fast_paths_cpu.py --fast-path token_chunks --size 1024x2048 --rounds 4
    .venv/bin/python benchmarks/bench_fast_paths_cpu.py --fast-path masked_attention --rounds 6 \\
        MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE bfloat16
    .venv/bin/python benchmarks/bench_fast_paths_cpu.py --fast-path recycled_memory --rounds 8
    .venv/bin/python benchmarks/bench_fast_paths_cpu.py --fast-path onednn_linear --rounds 8
    .venv/bin/python benchmarks/bench_fast_paths_cpu.py --fast-path onednn_mask_logits --rounds 8 \\
        MODEL.MASK_FORMER.TEST.AUTOCAST_DTYPE bfloat16

For each variant, the median over rounds of: the whole inference, the network (``MaskFormer.network``), the post-
processing (``MaskFormer.inference``) and the part the fast path replaces (the deformable encoder for
``token_chunks``, the transformer decoder for ``masked_attention`` and ``onednn_mask_logits``, the post-processing
for ``recycled_memory``, the network for ``onednn_linear``); then how far the outputs of the two variants are
apart. Random weights of the config (default: the R50 COCO-panoptic one). "off" forces the reference, by replacing
the fast path's predicate with ``False`` in this process (for ``onednn_linear``, the constant it reads,
``ONEDNN_LINEAR_AVAILABLE``), or for ``recycled_memory`` by switching the model's ``recycle_output_memory`` off.
Each variant runs once untimed first; each inference's outputs are dropped before the next (the last of each
variant's are kept for the comparison).
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List, NamedTuple

import torch

import mask_former.layers.onednn_linear as onednn_linear
import mask_former.modeling.fast_paths.mask_logits as mask_logits
import mask_former.modeling.pixel_decoder.msdeformattn as msdeformattn
import mask_former.modeling.transformer_blocks as transformer_blocks
from bench_large_images_cpu import parse_size
from bench_train_cpu import build_model
from roofline import machine


class FastPath(NamedTuple):
    """``switch(model, on)`` turns the fast path on or off; ``part(model)`` is ``(object, method)``, what it speeds
    up."""

    switch: Callable
    part: Callable


def predicate_switch(module, name: str) -> Callable:
    """Turns off a fast path by replacing its predicate, ``module``'s imported ``name``, with ``False``."""
    predicate = getattr(module, name)
    return lambda model, on: setattr(module, name, predicate if on else lambda *args: False)


def constant_switch(module, name: str) -> Callable:
    """Turns off a fast path by setting ``module``'s constant ``name``, which its predicate reads, to ``False``."""
    constant = getattr(module, name)
    return lambda model, on: setattr(module, name, constant and on)


FAST_PATHS = {
    "token_chunks": FastPath(
        predicate_switch(msdeformattn, "uses_token_chunks"),
        lambda model: (model.sem_seg_head.pixel_decoder.transformer, "forward"),
    ),
    "masked_attention": FastPath(
        predicate_switch(transformer_blocks, "uses_fused_attention"),
        lambda model: (model.sem_seg_head.predictor, "forward"),
    ),
    "onednn_linear": FastPath(
        constant_switch(onednn_linear, "ONEDNN_LINEAR_AVAILABLE"), lambda model: (model, "network")
    ),
    "onednn_mask_logits": FastPath(
        predicate_switch(mask_logits, "uses_onednn_mask_logits"),
        lambda model: (model.sem_seg_head.predictor, "forward"),
    ),
    "recycled_memory": FastPath(
        lambda model, on: setattr(model, "recycle_output_memory", on), lambda model: (model, "inference")
    ),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast-path", choices=list(FAST_PATHS), required=True)
    parser.add_argument("--config-file", default="configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    parser.add_argument("--size", type=parse_size, default=(512, 512), metavar="HxW")
    parser.add_argument("--rounds", type=int, default=4, help="inferences of each variant, alternating which is first")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    args = parser.parse_args(argv)
    args.weights, args.upstream = None, None  # as bench_train_cpu.build_model reads them
    return args


def timed(times: List[float], function: Callable) -> Callable:
    """``function``, appending the seconds of each call to ``times``."""

    def run(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        times.append(time.perf_counter() - start)
        return result

    return run


def output_distance(a: Dict, b: Dict) -> str:
    parts = []
    if "sem_seg" in a:
        parts.append(f"sem_seg within {(a['sem_seg'] - b['sem_seg']).abs().max().item():.1e}")
    if "panoptic_seg" in a:
        equal = (a["panoptic_seg"][0] == b["panoptic_seg"][0]).float().mean().item()
        parts.append(f"panoptic ids equal on {100 * equal:.3f}% of pixels")
    if "instances" in a:
        scores = (a["instances"].scores - b["instances"].scores).abs().max().item()
        parts.append(f"instance scores within {scores:.1e}")
    return "; ".join(parts)


def main(argv=None):
    args = parse_args(argv)
    fast_path = FAST_PATHS[args.fast_path]
    model = build_model(args).eval()
    columns = ("inference", "network", "post-processing", "fast path's part")
    times = {variant: {column: [] for column in columns} for variant in ("off", "on")}
    image = torch.randint(0, 256, (3, *args.size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = [{"image": image, "height": args.size[0], "width": args.size[1]}]
    part, method = fast_path.part(model)
    network, inference = model.network, model.inference
    outputs = {}
    with torch.no_grad():
        for on in (False, True):  # warm-up
            fast_path.switch(model, on)
            model(inputs)
        for number in range(args.rounds):
            for variant in ("off", "on") if number % 2 == 0 else ("on", "off"):
                outputs.pop(variant, None)
                fast_path.switch(model, variant == "on")
                column = times[variant]
                model.network = timed(column["network"], network)
                model.inference = timed(column["post-processing"], inference)
                setattr(part, method, timed(column["fast path's part"], getattr(part, method)))
                outputs[variant] = timed(column["inference"], model)(inputs)[0]
                del part.__dict__[method]
    fast_path.switch(model, True)
    height, width = args.size
    print(f"{args.config_file} {' '.join(args.opts)}, {height}x{width}, {args.fast_path}, {args.rounds} rounds, "
          f"torch {torch.__version__}, {machine()}")
    print("| " + " | ".join(["variant"] + [f"{c} s (median)" for c in columns] + ["each round's inference s"]) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for variant, column in times.items():
        cells = [f"{statistics.median(column[c]):.3f}" for c in columns]
        rounds = ", ".join(f"{t:.3f}" for t in column["inference"])
        print(f"| {variant} | " + " | ".join(cells) + f" | {rounds} |")
    print(f"outputs, on against off: {output_distance(outputs['on'], outputs['off'])}")


if __name__ == "__main__":
    main()
