"""CPU time per record of every training dataset mapper, on realistic synthetic records, beside upstream
Mask2Former's mapper of the same name:

    .venv/bin/python benchmarks/bench_mappers_cpu.py [--upstream /path/to/Mask2Former] [--records 20] [--runs 5]

The records are written to a temporary folder: ``--size`` (default 480x360) JPEG images of random regions
with, per record, a semantic PNG (contiguous class ids, 255 unlabelled), a COCO panoptic PNG with its
``segments_info`` (one crowd segment, VOID pixels) and COCO instance annotations (polygons, and a crowd RLE);
and videos of ``VIDEO_FRAMES`` of those images with YouTube-VIS annotations (``VIDEO_TRACKS`` tracks, one
absent from every other frame, an RLE per frame, as ``load_ytvis_json`` returns them).
Each mapper runs with the upstream config of its task (``CONFIGS``): ADE20K semantic / panoptic / instance
for the ``mask_former_*`` mappers, COCO for the large-scale-jitter ones, MaskFormer v1's COCO panoptic for
``detr_panoptic`` (which upstream Mask2Former does not have), YouTube-VIS 2019 for the clip mapper ``ytvis``
(upstream's ``YTVISDatasetMapper``, from its video project).

With ``--upstream PATH`` (a Mask2Former checkout), upstream's mapper modules are imported with our
detectron2 (see :func:`import_upstream_configs`), built from upstream's config of the same name, and run on
the same records with the same seeds; the table then also says whether ours returned upstream's tensors,
equal element for element (ours may return more: the large-scale-jitter mappers add ``padding_mask``).
Prints a markdown table: milliseconds per record (median over ``--runs`` passes over all records, ours and
upstream's alternating) and ours / upstream. Timings on a busy machine are noisy: run it on a quiet one.
"""
import argparse
import importlib
import os
import random
import statistics
import sys
import tempfile
import time
import types
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from panopticapi.utils import id2rgb
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NAME = "bench_mappers_train"  # the metadata the semantic mappers read ignore_label from
IGNORE_LABEL = 255
NUM_CLASSES = 80  # class ids drawn below this fit every image config's NUM_CLASSES
VIDEO_CLASSES = 40  # YouTube-VIS 2019's
VIDEO_FRAMES = 6
VIDEO_TRACKS = 4
# Mapper name -> (config file, relative to the checkout; kind of record it maps).
CONFIGS = {
    "mask_former_semantic": ("configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml", "semantic"),
    "mask_former_panoptic": ("configs/ade20k/panoptic-segmentation/maskformer2_R50_bs16_160k.yaml", "panoptic"),
    "mask_former_instance": ("configs/ade20k/instance-segmentation/maskformer2_R50_bs16_160k.yaml", "instance"),
    "coco_instance_lsj": ("configs/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml", "instance"),
    "coco_panoptic_lsj": ("configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml", "panoptic"),
    "detr_panoptic": ("configs/maskformer/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml", "panoptic"),
    "ytvis": ("configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml", "video"),
}
IMAGE_MAPPERS = "mask2former.data.dataset_mappers"
# Mapper name -> (upstream's module, class name).
UPSTREAM_MAPPERS = {
    "mask_former_semantic": (f"{IMAGE_MAPPERS}.mask_former_semantic_dataset_mapper", "MaskFormerSemanticDatasetMapper"),
    "mask_former_panoptic": (f"{IMAGE_MAPPERS}.mask_former_panoptic_dataset_mapper", "MaskFormerPanopticDatasetMapper"),
    "mask_former_instance": (f"{IMAGE_MAPPERS}.mask_former_instance_dataset_mapper", "MaskFormerInstanceDatasetMapper"),
    "coco_instance_lsj": (f"{IMAGE_MAPPERS}.coco_instance_new_baseline_dataset_mapper",
                          "COCOInstanceNewBaselineDatasetMapper"),
    "coco_panoptic_lsj": (f"{IMAGE_MAPPERS}.coco_panoptic_new_baseline_dataset_mapper",
                          "COCOPanopticNewBaselineDatasetMapper"),
    "ytvis": ("mask2former_video.data_video.dataset_mapper", "YTVISDatasetMapper"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20, help="records per kind")
    parser.add_argument("--runs", type=int, default=5, help="timed passes over the records")
    parser.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 360), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--mappers", nargs="+", choices=list(CONFIGS), default=list(CONFIGS), metavar="NAME",
                        help=f"mappers to time, of {list(CONFIGS)}")
    parser.add_argument("--upstream", default=None, help="a Mask2Former checkout to time beside ours")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a data loader worker's share)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Synthetic records.


def region_map(rng: np.random.Generator, height: int, width: int, count: int) -> np.ndarray:
    """int64 ``[H, W]``: the index of the nearest of ``count`` random points (Voronoi cells)."""
    points = rng.uniform((0, 0), (height, width), size=(count, 2))
    ys, xs = np.mgrid[:height, :width]
    distances = (ys[None] - points[:, 0, None, None]) ** 2 + (xs[None] - points[:, 1, None, None]) ** 2
    return distances.argmin(0)


def star_polygon(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random star-shaped polygon inside the image, flat ``[x0, y0, x1, y1, ...]``."""
    center = rng.uniform((0.1 * width, 0.1 * height), (0.9 * width, 0.9 * height))
    angles = np.sort(rng.uniform(0, 2 * np.pi, 14))
    radii = rng.uniform(0.3, 1.0, 14) * min(height, width) * 0.2
    points = center + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
    return np.clip(points, 0, (width - 1, height - 1)).reshape(-1)


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def polygon_box(polygon: np.ndarray) -> List[float]:
    """``[x, y, width, height]`` of a flat polygon."""
    xs, ys = polygon[0::2], polygon[1::2]
    return [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]


def video_records(images: List[dict], seed: int = 0) -> List[dict]:
    """One video per image record, of ``VIDEO_FRAMES`` consecutive images (cyclically), with ``VIDEO_TRACKS`` object
    tracks, each a random polygon's RLE in every frame, the last track only in even frames."""
    from detectron2.structures import BoxMode, polygons_to_bitmask

    videos = []
    for index in range(len(images)):
        rng = np.random.default_rng([seed, index, 1])
        frames = [images[(index + offset) % len(images)] for offset in range(VIDEO_FRAMES)]
        height, width = frames[0]["height"], frames[0]["width"]
        classes = rng.integers(0, VIDEO_CLASSES, VIDEO_TRACKS)
        annotations = []
        for frame in range(VIDEO_FRAMES):
            objects = []
            for track in range(VIDEO_TRACKS - (frame % 2)):
                polygon = star_polygon(rng, height, width)
                objects.append({
                    "id": track + 1, "category_id": int(classes[track]), "iscrowd": 0,
                    "segmentation": compressed_rle(polygons_to_bitmask([polygon], height, width)),
                    "bbox": polygon_box(polygon), "bbox_mode": BoxMode.XYWH_ABS,
                })
            annotations.append(objects)
        videos.append({"file_names": [f["file_name"] for f in frames], "length": VIDEO_FRAMES, "height": height,
                       "width": width, "video_id": index, "annotations": annotations})
    return videos


def write_records(root: str, count: int, size: Tuple[int, int], seed: int = 0) -> Dict[str, List[dict]]:
    """Write ``count`` images with their labels under ``root``; returns the dataset dicts of each kind."""
    from detectron2.structures import BoxMode, polygons_to_bitmask

    width, height = size
    records = {"semantic": [], "panoptic": [], "instance": []}
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        regions = region_map(rng, height, width, 16)
        colors = rng.integers(0, 256, (16, 3))
        image = np.clip(colors[regions] + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        classes = rng.integers(0, NUM_CLASSES, 16)
        classes[0] = IGNORE_LABEL
        segment_ids = rng.choice(np.arange(1, 256**3), 16, replace=False)
        segment_ids[0] = 0  # VOID
        paths = {kind: os.path.join(root, f"{index:04d}_{kind}") for kind in ("image", "semantic", "panoptic")}
        Image.fromarray(image).save(paths["image"] + ".jpg", quality=90)
        Image.fromarray(classes[regions].astype(np.uint8)).save(paths["semantic"] + ".png")
        Image.fromarray(id2rgb(segment_ids[regions])).save(paths["panoptic"] + ".png")
        base = {"file_name": paths["image"] + ".jpg", "height": height, "width": width, "image_id": index}
        records["semantic"].append({**base, "sem_seg_file_name": paths["semantic"] + ".png"})
        segments_info = [
            {"id": int(segment_ids[i]), "category_id": int(classes[i]), "iscrowd": int(i == 1), "isthing": i < 9}
            for i in range(1, 16)
        ]
        records["panoptic"].append(
            {
                **base,
                "pan_seg_file_name": paths["panoptic"] + ".png",
                "sem_seg_file_name": paths["semantic"] + ".png",
                "segments_info": segments_info,
            }
        )
        annotations = []
        for i in range(9):
            polygon = star_polygon(rng, height, width)
            crowd = i == 8  # COCO's crowd annotations are RLE
            mask = polygons_to_bitmask([polygon], height, width)
            segmentation = compressed_rle(mask) if crowd else [polygon.tolist()]
            annotations.append(
                {
                    "category_id": int(rng.integers(0, NUM_CLASSES)),
                    "segmentation": segmentation,
                    "bbox": polygon_box(polygon),
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "iscrowd": int(crowd),
                }
            )
        records["instance"].append({**base, "annotations": annotations})
    records["video"] = video_records(records["instance"], seed)
    return records


# ---------------------------------------------------------------------------------------------
# Mappers.


UPSTREAM_PACKAGES = ("mask2former", "mask2former.data", IMAGE_MAPPERS, "mask2former_video",
                     "mask2former_video.data_video")


def import_upstream_configs(path: str) -> Callable:
    """Make upstream's packages (``UPSTREAM_PACKAGES``) empty stubs whose ``__path__`` is the checkout's folder, so
    that importing one of its mapper modules runs that module alone with our detectron2, not the packages'
    ``__init__`` (which builds the models, needing timm and the compiled op, and registers datasets under the
    names ours registers). Returns a function adding upstream's config keys, the video project's included."""
    for name in UPSTREAM_PACKAGES:
        stub = types.ModuleType(name)
        stub.__path__ = [os.path.join(path, *name.split("."))]
        sys.modules[name] = stub
    image, video = (importlib.import_module(f"{package}.config") for package in ("mask2former", "mask2former_video"))
    return lambda cfg: (image.add_maskformer2_config(cfg), video.add_maskformer2_video_config(cfg))


def build_cfg(config_file: str, add_config: Callable):
    from detectron2.config import get_cfg
    from detectron2.data import MetadataCatalog
    from detectron2.projects.deeplab import add_deeplab_config

    MetadataCatalog.get(TRAIN_NAME).set(ignore_label=IGNORE_LABEL)
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.DATASETS.TRAIN = (TRAIN_NAME,)
    return cfg


def build_ours(name: str) -> Callable:
    from mask_former import add_maskformer2_config, add_maskformer2_video_config
    from mask_former.data.dataset_mappers import build_dataset_mapper

    def add_config(cfg):
        add_maskformer2_config(cfg)
        add_maskformer2_video_config(cfg)

    return build_dataset_mapper(build_cfg(os.path.join(REPO, CONFIGS[name][0]), add_config), name=name)


def build_upstream(name: str, path: str) -> Optional[Callable]:
    if name not in UPSTREAM_MAPPERS:
        return None
    add_config = import_upstream_configs(path)
    module_name, class_name = UPSTREAM_MAPPERS[name]
    cfg = build_cfg(os.path.join(path, CONFIGS[name][0]), add_config)
    return getattr(importlib.import_module(module_name), class_name)(cfg, is_train=True)


# ---------------------------------------------------------------------------------------------
# Running and comparing.


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def map_all(mapper: Callable, records: List[dict]) -> List[dict]:
    """Each record mapped right after seeding every generator with its index, as the golden fixtures are."""
    outputs = []
    for index, record in enumerate(records):
        seed_all(index)
        outputs.append(mapper(record))
    return outputs


def comparable(output: dict) -> Dict[str, torch.Tensor]:
    """The tensors of a mapper's output, by name; masks as bool (upstream's empty masks are float); a clip's
    frame by frame."""
    if isinstance(output["image"], list):
        frames = [comparable({"image": image, "instances": instances})
                  for image, instances in zip(output["image"], output["instances"])]
        return {f"frame {i} {key}": value for i, frame in enumerate(frames) for key, value in frame.items()}
    tensors = {key: output[key] for key in ("image", "sem_seg", "padding_mask") if key in output}
    instances = output.get("instances")
    if instances is not None:
        tensors["gt_classes"] = instances.gt_classes
        masks = instances.gt_masks
        tensors["gt_masks"] = getattr(masks, "tensor", masks).bool()  # a BitMasks or a tensor
        if instances.has("gt_boxes"):
            tensors["gt_boxes"] = instances.gt_boxes.tensor
        if instances.has("gt_ids"):
            tensors["gt_ids"] = instances.gt_ids
    return tensors


def first_difference(ours: List[dict], upstream: List[dict]) -> Optional[str]:
    """Where the first tensor of upstream's outputs that ours lacks or holds other values in is, or None."""
    for index, (a, b) in enumerate(zip(ours, upstream)):
        a, b = comparable(a), comparable(b)
        for key in sorted(b):
            if key not in a or a[key].shape != b[key].shape or not torch.equal(a[key], b[key]):
                return f"record {index}: {key}"
    return None


def per_record_ms(mappers: Dict[str, Callable], records: List[dict], args) -> Dict[str, float]:
    """Milliseconds per record of each mapper: the median over ``args.runs`` passes over ``records``, the mappers'
    passes alternating (their order reversed every other run), so that a drift in the machine hits all alike."""
    for mapper in mappers.values():
        for _ in range(args.warmup):
            map_all(mapper, records)
    seconds = {name: [] for name in mappers}
    for run in range(args.runs):
        for name in list(mappers)[::1 if run % 2 == 0 else -1]:
            start = time.perf_counter()
            map_all(mappers[name], records)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) / len(records) * 1000 for name, times in seconds.items()}


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_mappers_") as root:
        records = write_records(root, args.records, tuple(args.size))
        for name in args.mappers:
            kind = CONFIGS[name][1]
            ours = build_ours(name)
            upstream = build_upstream(name, args.upstream) if args.upstream else None
            if upstream is None:
                rows.append((name, per_record_ms({"ours": ours}, records[kind], args)["ours"], None, "-"))
                continue
            ms = per_record_ms({"ours": ours, "upstream": upstream}, records[kind], args)
            ours_ms, upstream_ms = ms["ours"], ms["upstream"]
            difference = first_difference(map_all(ours, records[kind]), map_all(upstream, records[kind]))
            rows.append((name, ours_ms, upstream_ms, "yes" if difference is None else f"NO ({difference})"))
    print(f"\n{args.records} records per kind of {args.size[0]}x{args.size[1]}, median of {args.runs} passes, "
          f"{args.threads} torch thread(s)\n")
    print("| mapper | ours ms/record | upstream ms/record | ours / upstream | same outputs |")
    print("|---|---|---|---|---|")
    for name, ours_ms, upstream_ms, same in rows:
        upstream_cell = "-" if upstream_ms is None else f"{upstream_ms:.1f}"
        ratio = "-" if upstream_ms is None else f"{ours_ms / upstream_ms:.2f}"
        print(f"| {name} | {ours_ms:.1f} | {upstream_cell} | {ratio} | {same} |")


if __name__ == "__main__":
    main()
