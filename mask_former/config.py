"""The config of MaskFormer and Mask2Former: its keys, and the config of a run.

:func:`add_maskformer2_config` adds every key that the upstream MaskFormer and Mask2Former configs
use, under its upstream name and with its upstream default, to a detectron2 config (after
``add_deeplab_config``, whose ``SOLVER.POLY_LR_*`` and ``SEM_SEG_HEAD.LOSS_TYPE`` keys the upstream
configs also set); :func:`add_maskformer2_video_config` then adds Mask2Former-VIS's. :func:`build_config`
builds the config of a run from a YAML file and command-line overrides, with errors that name the file or
the key.
"""
import logging
import os
from typing import Sequence

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from .errors import ConfigError

__all__ = ["add_maskformer2_config", "add_maskformer2_video_config", "build_config", "uses_cuda"]


def add_maskformer2_config(cfg):
    """Add the MaskFormer / Mask2Former keys to ``cfg`` in place and return it."""
    # Data.
    # Name of the dataset mapper in mask_former.data.DATASET_MAPPER_REGISTRY used for training.
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    # Photometric augmentation of SSD (brightness, contrast, saturation, hue) in training.
    cfg.INPUT.COLOR_AUG_SSD = False
    # Crops are retried until no single category covers more than this fraction of the crop.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Pad training images to this size divisibility (-1: no padding in the mapper).
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # How the mask_former_* mappers pad to SIZE_DIVISIBILITY: "fixed" (upstream) to exactly
    # SIZE_DIVISIBILITY x SIZE_DIVISIBILITY, cutting a larger image at the bottom and right as
    # upstream does; "multiple" up to the next multiples of SIZE_DIVISIBILITY, never cutting.
    cfg.INPUT.SIZE_DIVISIBILITY_PADDING = "fixed"
    # Drop the targets whose mask became empty in augmentation (e.g. cropped away). False keeps
    # them, as upstream does (coco_instance_lsj drops instances the crop removed, as upstream).
    cfg.INPUT.DROP_EMPTY_TARGETS = False
    # Cut instance polygons at the crop with shapely, as upstream (detectron2's
    # transform_instance_annotations; needs the shapely package). False moves only their corners
    # and lets drawing clip them: no shapely, but masks can differ from upstream's by a few
    # pixels along the crop's border.
    cfg.INPUT.CROP_POLYGONS_WITH_SHAPELY = True
    # Large-scale jitter (coco_*_lsj mappers): output size and the scale range of the resize.
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    # Solver.
    # Weight decay of embedding parameters (query features and positions).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # "ADAMW" or "SGD".
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    # Learning-rate multiplier of the backbone's parameters.
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1

    # Model.
    mf = cfg.MODEL.MASK_FORMER = CfgNode()
    # Losses on the predictions of every decoder layer, not only the last.
    mf.DEEP_SUPERVISION = True
    # Classification weight of the "no object" class.
    mf.NO_OBJECT_WEIGHT = 0.1
    # Loss weights (also the matcher's cost weights).
    mf.CLASS_WEIGHT = 1.0
    mf.DICE_WEIGHT = 1.0
    mf.MASK_WEIGHT = 20.0
    # Transformer: attention heads, dropout, feed-forward width, encoder / decoder depth.
    mf.NHEADS = 8
    mf.DROPOUT = 0.1
    mf.DIM_FEEDFORWARD = 2048
    mf.ENC_LAYERS = 0
    mf.DEC_LAYERS = 6
    # Layer norm before (True) or after (False) each attention / feed-forward block.
    mf.PRE_NORM = False
    # Width of the transformer decoder and number of queries.
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    # Feature fed to the transformer decoder: a backbone feature ("res5"), "transformer_encoder"
    # (the pixel decoder's encoder output), "pixel_embedding" or "multi_scale_pixel_decoder".
    mf.TRANSFORMER_IN_FEATURE = "res5"
    # Always project the decoder's input feature, even when its width is HIDDEN_DIM already.
    mf.ENFORCE_INPUT_PROJ = False
    # Name of the transformer decoder in TRANSFORMER_DECODER_REGISTRY.
    mf.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    # Which upstream project's training and inference rules to follow: "maskformer" (v1: focal +
    # dice losses on full masks, argmax-only panoptic merge, v1's evaluators) or "mask2former"
    # (point-sampled losses, confident-pixel panoptic merge). "" derives it from the config:
    # see mask_former.modeling.recipe.build_recipe.
    mf.RECIPE = ""
    # Inputs are padded to this size divisibility inside the model.
    mf.SIZE_DIVISIBILITY = 32
    # Run the backbone in channels_last memory layout: the same results up to float rounding, and
    # faster convolutions (oneDNN on the CPU). False keeps torch's default contiguous layout.
    mf.CHANNELS_LAST = True
    # Fold each frozen batch norm of the backbone (FrozenBN, as the ResNet configs use) into the weights of
    # the convolution before it: the same results up to float rounding, one to three fewer passes over
    # every convolution's output. False runs them as detectron2 does, conv then norm.
    mf.FOLD_FROZEN_BN = True
    # Point-sampled mask losses: number of points, oversampling and importance-sampling ratios.
    mf.TRAIN_NUM_POINTS = 112 * 112
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75
    # Loading a checkpoint whose parameter shapes differ from the model's is an error, unless
    # this is True: then every such parameter is skipped (keeps its initialization), as fvcore does.
    mf.ALLOW_CHECKPOINT_SHAPE_MISMATCH = False
    # False: fine-tuning a trained model to other classes. The class head (sem_seg_head.predictor.class_embed.*
    # and criterion.empty_weight) is not loaded from MODEL.WEIGHTS but initialized fresh, and every other
    # parameter must load (a missing, unexpected or mismatched one is an error). Resuming the run's own
    # checkpoints (--resume) and evaluation load the class head whatever this says.
    mf.LOAD_CLASS_HEAD = True
    # At evaluation, in the demo and in tools/export_model.py (and in training with LOAD_CLASS_HEAD False),
    # empty MODEL.WEIGHTS or a checkpoint that leaves parameters uninitialized (or holds keys the model lacks)
    # is an error, unless this is True: then the model runs with random parameters, with a warning.
    mf.ALLOW_RANDOM_WEIGHTS = False

    test = mf.TEST = CfgNode()
    # Which inference outputs to produce; any combination is allowed.
    test.SEMANTIC_ON = True
    test.INSTANCE_ON = False
    test.PANOPTIC_ON = False
    # Panoptic inference: minimum class score of a kept query, and minimum fraction of a query's
    # mask that must survive the pixel assignment for its segment to be kept.
    test.OBJECT_MASK_THRESHOLD = 0.0
    test.OVERLAP_THRESHOLD = 0.0
    # Semantic inference on the padded, resized output (True) or after resizing back (False).
    test.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
    # Run the network (backbone, pixel decoder, transformer decoder) at inference under torch.autocast in
    # this dtype on the model's device: "" (float32, upstream), "bfloat16" or "float16". The post-processing
    # stays float32; training is not affected. bfloat16 is faster on CPUs with native bf16 (AVX-512 BF16,
    # AMX, Arm BF16); elsewhere it is emulated and slower (see README).
    test.AUTOCAST_DTYPE = ""
    # True: CPU inference writes its large outputs (sem_seg, the instances' masks) into the memory of earlier
    # outputs that nothing refers to any more, instead of fresh pages that the kernel must clear on first write.
    # The same values, a faster post-processing; but the process keeps up to one image's outputs' worth of memory
    # between inferences, through the next network pass, which raises the peak (see README).
    # mask_former.modeling.fast_paths.recycled_memory.release_output_memory frees it. False: fresh memory.
    test.RECYCLE_OUTPUT_MEMORY = False

    head = cfg.MODEL.SEM_SEG_HEAD
    # Channels of the per-pixel mask embeddings.
    head.MASK_DIM = 256
    # Transformer encoder layers inside the pixel decoder.
    head.TRANSFORMER_ENC_LAYERS = 0
    # Name of the pixel decoder in PIXEL_DECODER_REGISTRY.
    head.PIXEL_DECODER_NAME = "BasePixelDecoder"
    # MSDeformAttnPixelDecoder: features it attends over, its sampling points and heads.
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8

    swin = cfg.MODEL.SWIN = CfgNode()
    # D2SwinTransformer, with the upstream Swin Transformer's argument names.
    swin.PRETRAIN_IMG_SIZE = 224
    swin.PATCH_SIZE = 4
    swin.EMBED_DIM = 96
    swin.DEPTHS = [2, 2, 6, 2]
    swin.NUM_HEADS = [3, 6, 12, 24]
    swin.WINDOW_SIZE = 7
    swin.MLP_RATIO = 4.0
    swin.QKV_BIAS = True
    swin.QK_SCALE = None
    swin.DROP_RATE = 0.0
    swin.ATTN_DROP_RATE = 0.0
    swin.DROP_PATH_RATE = 0.3
    # Absolute position embedding, and layer norm after the patch embedding.
    swin.APE = False
    swin.PATCH_NORM = True
    swin.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # Gradient checkpointing of each Swin block (saves memory in training).
    swin.USE_CHECKPOINT = False
    return cfg


def add_maskformer2_video_config(cfg):
    """Add the keys of Mask2Former for video instance segmentation (upstream's ``mask2former_video``)
    to ``cfg`` in place and return it. Call it after :func:`add_maskformer2_config`."""
    if "MASK_FORMER" not in cfg.MODEL:
        raise ValueError(
            "add_maskformer2_video_config: call add_maskformer2_config(cfg) first (MODEL.MASK_FORMER is absent)"
        )
    # Frames sampled per training clip; the frames are drawn within SAMPLING_FRAME_RANGE of a reference frame
    # and, with SAMPLING_FRAME_SHUFFLE, returned in random order instead of time order.
    cfg.INPUT.SAMPLING_FRAME_NUM = 2
    cfg.INPUT.SAMPLING_FRAME_RANGE = 20
    cfg.INPUT.SAMPLING_FRAME_SHUFFLE = False
    # Extra training augmentations of the clip, by name: "brightness", "contrast", "saturation", "rotation".
    cfg.INPUT.AUGMENTATIONS = []

    test = cfg.MODEL.MASK_FORMER.TEST
    # Beyond upstream, opt-in. Windowed inference of long videos: decode windows of WINDOW_SIZE frames one
    # after the other, associate each window's queries with the previous window's by Hungarian matching of
    # the decoder's query embeddings (cosine similarity, as MinVIS), average each track's class scores
    # over the windows, then keep upstream's top 10 (query, class) pairs. Memory holds one window's features
    # plus every track's low-resolution mask logits. 0 decodes the whole video at once (upstream); so does a
    # window as long as the video, with upstream's outputs.
    test.WINDOW_SIZE = 0
    # Frames that go through the backbone and the pixel decoder together at inference, and whose masks are
    # upsampled together: features are made in chunks of this many frames and joined for the transformer
    # decoder, so that the backbone's large intermediate maps exist for one chunk only. The same outputs up
    # to float rounding (these layers compute each frame alone). 0 runs every frame (of a window) at once,
    # as upstream.
    test.FRAME_CHUNK_SIZE = 4
    return cfg


def uses_cuda(device: str) -> bool:
    """Whether a ``MODEL.DEVICE`` value means running on CUDA here."""
    return str(device).startswith("cuda") and torch.cuda.is_available()


def _config_error(source: str, error: Exception) -> ConfigError:
    # yacs puts its message ("Non-existent config key: X", "Type mismatch ... for config key: X")
    # in args[0]; str() of a KeyError would add quotes.
    message = error.args[0] if error.args else repr(error)
    return ConfigError(f"{source}: {message}")


def build_config(config_file: str = "", opts: Sequence[str] = (), *, freeze: bool = True) -> CfgNode:
    """
    detectron2's default config with the DeepLab, MaskFormer and Mask2Former-VIS keys, merged with ``config_file``
    (upstream MaskFormer / Mask2Former / Mask2Former-VIS YAML files work unchanged) and the ``opts`` overrides
    (``["KEY", "VALUE", ...]``).

    ``MODEL.DEVICE`` "cuda" (the default) becomes "cpu", with a warning, where CUDA is not
    available.

    Raises:
        ConfigError: the file does not exist or cannot be parsed, or a key is unknown, or a value
            has the wrong type; the message names the file or the key.
    """
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_maskformer2_video_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file {config_file!r} does not exist")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError, OSError, yaml.YAMLError) as e:
            raise _config_error(f"config file {config_file!r}", e) from e
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as e:
        raise _config_error("command-line options", e) from e
    if cfg.MODEL.DEVICE.startswith("cuda") and not uses_cuda(cfg.MODEL.DEVICE):
        logging.getLogger(__name__).warning(
            f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but CUDA is not available: using the CPU"
        )
        cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg
