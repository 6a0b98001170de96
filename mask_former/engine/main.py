"""The training and evaluation command (``train_net.py``): its arguments, the config of a run, and what
each process runs.

detectron2's ``tools/train_net.py`` with the MaskFormer trainer (:class:`Trainer`), the CPU launcher
(:func:`launch`), ``--allow-random-weights`` and ``--dataset`` (dataset description files), and errors
reported as one line and exit status 2.
"""
import argparse
import sys
from collections import OrderedDict
from typing import List, Optional

from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import MaskFormerCheckpointer, add_random_weights_flag, random_weights_opts
from ..config import build_config
from ..data.datasets.custom import add_dataset_flag, check_config, register_dataset_descriptions
from ..errors import CheckpointError, ConfigError, DatasetDescriptionError
from .launch import launch
from .trainer import Trainer

__all__ = ["Trainer", "argument_parser", "cli", "evaluate", "main", "run_config", "setup"]


def argument_parser() -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser`` with ``--allow-random-weights`` and ``--dataset``."""
    parser = default_argument_parser()
    add_random_weights_flag(parser)
    add_dataset_flag(parser)
    return parser


def run_config(args: argparse.Namespace) -> CfgNode:
    """Register the ``--dataset`` splits (in every process: each runs :func:`main`), then build the
    config file merged with the command line's overrides, checked against the described datasets
    it names."""
    register_dataset_descriptions(args.dataset)
    cfg = build_config(args.config_file, args.opts + random_weights_opts(args))
    check_config(cfg)
    return cfg


def setup(args: argparse.Namespace) -> CfgNode:
    """The run's config, with detectron2's default setup (logging, seeding, config backup)."""
    cfg = run_config(args)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask_former")
    return cfg


def evaluate(cfg: CfgNode, resume: bool) -> OrderedDict:
    """Evaluate ``MODEL.WEIGHTS`` (or, with ``resume``, the last checkpoint of ``OUTPUT_DIR``), which
    must initialize every parameter unless ``MODEL.MASK_FORMER.ALLOW_RANDOM_WEIGHTS``."""
    model = Trainer.build_model(cfg)
    checkpointer = MaskFormerCheckpointer.from_config(cfg, model, cfg.OUTPUT_DIR, for_inference=True)
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    results = Trainer.test(cfg, model)
    if cfg.TEST.AUG.ENABLED:
        results.update(Trainer.test_with_TTA(cfg, model))
    if comm.is_main_process():
        verify_results(cfg, results)
    return results


def main(args: argparse.Namespace) -> Optional[OrderedDict]:
    """What every process runs: evaluate (``--eval-only``) or train, resuming with ``--resume``."""
    cfg = setup(args)
    if args.eval_only:
        return evaluate(cfg, args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` (the command line's by default), check the config, and run :func:`main` in
    ``--num-gpus`` processes. Returns the exit status: 0, or 2 after printing a config, checkpoint or
    dataset description error."""
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        cfg = run_config(args)
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
            device=cfg.MODEL.DEVICE,
        )
    except (ConfigError, CheckpointError, DatasetDescriptionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
