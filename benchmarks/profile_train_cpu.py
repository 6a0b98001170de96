"""Where a CPU training step's time and memory go: one step (forward, losses, backward) of a config under
torch.profiler with profile_memory, after ``--warmup`` unprofiled steps, on the same random batch as
bench_train_cpu.py. Prints the top operators by self CPU time and by memory they allocate and keep
(self CPU memory), each with the Python frames that called it (``--shapes``: with its input shapes instead).

    MASK_FORMER_DEFORM_ATTN=pytorch .venv/bin/python benchmarks/profile_train_cpu.py --top 15
"""
import argparse
import sys

from torch.profiler import ProfilerActivity, profile

from bench_train_cpu import build_model, training_batch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml")
    parser.add_argument("--train-size", type=int, default=384)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--instances", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--stack", type=int, default=4, help="Python frames shown per operator")
    parser.add_argument("--shapes", action="store_true",
                        help="group the operators by input shapes instead of by Python frames")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE pairs")
    return parser.parse_args(argv)


def step(model, batch):
    sum(model(batch).values()).backward()
    model.zero_grad(set_to_none=True)


def main(argv=None):
    args = parse_args(argv)
    args.weights, args.upstream = None, None
    model = build_model(args).train()
    batch = training_batch(args)
    for i in range(args.warmup):
        print(f"[profile_train_cpu] warm-up step {i + 1}/{args.warmup}", file=sys.stderr, flush=True)
        step(model, batch)
    print("[profile_train_cpu] profiled step", file=sys.stderr, flush=True)
    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, with_stack=True, record_shapes=args.shapes
    ) as prof:
        step(model, batch)
    grouping = {"group_by_input_shape": True} if args.shapes else {"group_by_stack_n": args.stack}
    for sort_by in ("self_cpu_time_total", "self_cpu_memory_usage"):
        table = prof.key_averages(**grouping).table(sort_by=sort_by, row_limit=args.top, max_name_column_width=40)
        print(f"\n## top {args.top} by {sort_by}\n{table}")


if __name__ == "__main__":
    main()
