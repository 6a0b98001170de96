"""Video test helpers. TEMPORARY: ``add_video_config`` stands in for ``add_maskformer2_video_config``
(upstream's video keys with upstream's defaults), which the video model's branch adds to
``mask_former.config``; once it lands, import that instead."""
import json

import numpy as np
import pycocotools.mask as mask_util
from helpers import base_cfg
from PIL import Image

import mask_former.config


def add_video_config(cfg):
    if hasattr(mask_former.config, "add_maskformer2_video_config"):
        return mask_former.config.add_maskformer2_video_config(cfg)
    cfg.INPUT.SAMPLING_FRAME_NUM = 2
    cfg.INPUT.SAMPLING_FRAME_RANGE = 20
    cfg.INPUT.SAMPLING_FRAME_SHUFFLE = False
    cfg.INPUT.AUGMENTATIONS = []
    return cfg


def video_cfg():
    """detectron2's config with the DeepLab, MaskFormer and video keys."""
    return add_video_config(base_cfg())


def rle(mask):
    encoded = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


def box_mask(height, width, x0, y0, x1, y1):
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_video_dataset(root, videos, annotations, categories, name="videos.json"):
    """Write a YouTube-VIS json and, for every frame it names, a random RGB image under
    ``root/JPEGImages``. Returns (json path, image root)."""
    image_root = root / "JPEGImages"
    rng = np.random.default_rng(0)
    for video in videos:
        for file_name in video["file_names"]:
            path = image_root / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (video["height"], video["width"], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
    json_file = root / name
    json_file.write_text(json.dumps({"videos": videos, "annotations": annotations, "categories": categories}))
    return str(json_file), str(image_root)
