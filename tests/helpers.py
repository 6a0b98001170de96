"""Shared test helpers: configs for tiny models."""
from detectron2.config import get_cfg
from detectron2.projects.deeplab import add_deeplab_config

import mask_former


def base_cfg():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    mask_former.add_maskformer2_config(cfg)
    mask_former.add_maskformer2_video_config(cfg)
    return cfg


def golden_cfg(folder):
    cfg = base_cfg()
    cfg.merge_from_file(str(folder / "config.yaml"))
    return cfg


def tiny_cfg(pixel_decoder="MSDeformAttnPixelDecoder", transformer_decoder="MultiScaleMaskedTransformerDecoder",
             in_feature="multi_scale_pixel_decoder", num_classes=5):
    """A Swin model small enough to train a step on CPU in a second."""
    cfg = base_cfg()
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.SWIN.EMBED_DIM = 32
    cfg.MODEL.SWIN.DEPTHS = [1, 1, 1, 1]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 4, 8]
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    head = cfg.MODEL.SEM_SEG_HEAD
    head.NAME = "MaskFormerHead"
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.NUM_CLASSES = num_classes
    head.CONVS_DIM = 32
    head.MASK_DIM = 32
    head.NORM = "GN"
    head.PIXEL_DECODER_NAME = pixel_decoder
    head.TRANSFORMER_ENC_LAYERS = 1
    head.COMMON_STRIDE = 4
    mf = cfg.MODEL.MASK_FORMER
    mf.TRANSFORMER_DECODER_NAME = transformer_decoder
    mf.TRANSFORMER_IN_FEATURE = in_feature
    mf.HIDDEN_DIM = 32
    mf.NHEADS = 4
    mf.DIM_FEEDFORWARD = 64
    mf.DEC_LAYERS = 3
    mf.NUM_OBJECT_QUERIES = 6
    mf.TRAIN_NUM_POINTS = 64
    mf.DROPOUT = 0.0
    mf.TEST.SEMANTIC_ON = True
    mf.TEST.PANOPTIC_ON = True
    mf.TEST.INSTANCE_ON = True
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.DATASETS.TRAIN = ("coco_2017_train_panoptic",)
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    return cfg


def cpu_sized_cfg(path):
    """An upstream model-zoo config with the same components (meta-architecture, backbone type and
    depth, pixel decoder, transformer decoder, head, recipe, classes, queries, decoder layers) but
    narrow enough to train a step on a 64 x 64 image on the CPU in about a second."""
    cfg = base_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    resnets = cfg.MODEL.RESNETS
    if resnets.DEPTH >= 50:  # R18 / R34 need 64 channels at res2 and are small already
        resnets.STEM_OUT_CHANNELS, resnets.RES2_OUT_CHANNELS, resnets.WIDTH_PER_GROUP = 8, 16, 4
    swin = cfg.MODEL.SWIN
    swin.EMBED_DIM, swin.NUM_HEADS, swin.DEPTHS = 16, [1, 2, 4, 8], [min(d, 2) for d in swin.DEPTHS]
    head = cfg.MODEL.SEM_SEG_HEAD
    head.CONVS_DIM = head.MASK_DIM = 32
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM, mf.DIM_FEEDFORWARD, mf.TRAIN_NUM_POINTS = 32, 64, 256
    return cfg
