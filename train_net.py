#!/usr/bin/env python
"""
MaskFormer / Mask2Former training and evaluation script (detectron2's ``tools/train_net.py`` with
the MaskFormer trainer, see :class:`mask_former.engine.Trainer`).

Examples::

    # train (on GPUs, or on the CPU with MODEL.DEVICE cpu / where CUDA is missing)
    python train_net.py --config-file configs/quickstart/mask2former_demo_shapes.yaml --num-gpus 1
    # two CPU processes (gloo)
    python train_net.py --config-file CONFIG --num-gpus 2 MODEL.DEVICE cpu
    # continue an interrupted run exactly where it stopped
    python train_net.py --config-file CONFIG --resume
    # evaluate a checkpoint (it must initialize every parameter: see --allow-random-weights)
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    # your own data: register the splits of a dataset description file (README, "Your own data")
    python train_net.py --config-file CONFIG --dataset mydata.yaml DATASETS.TRAIN "('mydata_train',)" ...
"""
import sys

from detectron2.engine import default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import mask_former  # noqa: F401  (registers the model, datasets and mappers)
from mask_former.checkpoint import CheckpointError, MaskFormerCheckpointer, add_random_weights_flag, random_weights_opts
from mask_former.data.datasets.custom import (
    DatasetDescriptionError,
    add_dataset_flag,
    check_config,
    register_dataset_descriptions,
)
from mask_former.engine import ConfigError, Trainer, build_config, launch


def run_config(args):
    """Register the ``--dataset`` splits (in every process: each runs ``main``), then build the
    config file merged with the command line's overrides, checked against the described datasets
    it names."""
    register_dataset_descriptions(args.dataset)
    cfg = build_config(args.config_file, args.opts + random_weights_opts(args))
    check_config(cfg)
    return cfg


def setup(args):
    """The run's config, with detectron2's default setup (logging, seeding, config backup)."""
    cfg = run_config(args)
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="mask_former")
    return cfg


def evaluate(cfg, resume: bool):
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


def main(args):
    cfg = setup(args)
    if args.eval_only:
        return evaluate(cfg, args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    """detectron2's ``default_argument_parser`` with ``--allow-random-weights`` and ``--dataset``."""
    parser = default_argument_parser()
    add_random_weights_flag(parser)
    add_dataset_flag(parser)
    return parser


def cli(argv=None) -> int:
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


if __name__ == "__main__":
    sys.exit(cli())
