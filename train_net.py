#!/usr/bin/env python
"""
MaskFormer / Mask2Former training and evaluation script (detectron2's ``tools/train_net.py`` with
the MaskFormer trainer). The logic lives in :mod:`mask_former.engine.main`; ``Trainer``, ``setup``
and ``main`` are importable from here, as from upstream's ``train_net.py``.

Examples::

    # train (on GPUs, or on the CPU with MODEL.DEVICE cpu / where CUDA is missing)
    python train_net.py --config-file configs/quickstart/mask2former_demo_shapes.yaml --num-gpus 1
    # two CPU processes (gloo)
    python train_net.py --config-file CONFIG --num-gpus 2 MODEL.DEVICE cpu
    # continue an interrupted run exactly where it stopped
    python train_net.py --config-file CONFIG --resume
    # evaluate a checkpoint (it must initialize every parameter: see --allow-random-weights)
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    # video instance segmentation (Mask2Former-VIS; train_net_video.py is the same command)
    python train_net.py --config-file configs/quickstart/video_mask2former_demo_shapes.yaml
    # your own data: register the splits of a dataset description file (README, "Your own data")
    python train_net.py --config-file CONFIG --dataset mydata.yaml DATASETS.TRAIN "('mydata_train',)" ...
"""
import sys

from mask_former.engine.main import Trainer, cli, main, setup

__all__ = ["Trainer", "main", "setup"]

if __name__ == "__main__":
    sys.exit(cli())
