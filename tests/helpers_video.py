"""Video test helpers: YouTube-VIS annotations and datasets on disk. (``helpers.base_cfg`` has the video
config keys, as ``mask_former.config.build_config``.)"""
import json

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image


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
