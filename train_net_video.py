#!/usr/bin/env python
"""
Mask2Former-VIS training and evaluation: upstream's ``train_net_video.py`` command line, run by
``train_net.py`` (the one trainer, which reads video datasets as clips and evaluates them with
``YTVISEvaluator``). ``Trainer``, ``setup`` and ``main`` are importable from here, as from upstream's.

Examples::

    python train_net_video.py --config-file configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml --num-gpus 8
    python train_net_video.py --config-file configs/quickstart/video_mask2former_demo_shapes.yaml
    python train_net_video.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
"""
import sys

from mask_former.engine.main import Trainer, cli, main, setup

__all__ = ["Trainer", "main", "setup"]

if __name__ == "__main__":
    sys.exit(cli())
