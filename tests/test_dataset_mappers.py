"""The training dataset mappers on tiny synthetic images and labels written to tmp_path."""
import random

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import transforms as T
from detectron2.projects.point_rend import ColorAugSSDTransform as PointRendColorAugSSDTransform
from detectron2.structures import BoxMode, polygons_to_bitmask
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image

from mask_former.config import add_maskformer2_config
from mask_former.data.dataset_mappers import (
    DATASET_MAPPER_REGISTRY,
    ColorAugSSD,
    ColorAugSSDTransform,
    DETRPanopticDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerSemanticDatasetMapper,
    RandomPipeline,
    build_dataset_mapper,
)
from mask_former.data.datasets import DatasetFileError

HEIGHT, WIDTH = 40, 60
IGNORE = 255
# A colour per class, so that labels can be read back from the image after augmentation.
CLASS_COLORS = np.array([[200, 0, 0], [0, 200, 0], [0, 0, 200], [50, 50, 50]], dtype=np.uint8)
UPSTREAM_MAPPER_NAMES = [
    "mask_former_semantic",
    "mask_former_panoptic",
    "mask_former_instance",
    "coco_instance_lsj",
    "coco_panoptic_lsj",
    "detr_panoptic",
]


def make_cfg(mapper_name="mask_former_semantic", num_classes=4, **input_options):
    """A config whose augmentations leave a 40x60 image's size unchanged (no crop, no flip)."""
    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper_name
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (HEIGHT,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.CROP.ENABLED = False
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = num_classes
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = IGNORE
    cfg.DATASETS.TRAIN = ()
    for key, value in input_options.items():
        setattr(cfg.INPUT, key, value)
    return cfg


def label_layout():
    """[40, 60] labels: class 0 on the left, 2 on the right, a class-1 square, top rows ignored."""
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    labels[:, 35:] = 2
    labels[20:30, 5:15] = 1
    labels[:4] = IGNORE
    return labels


def write_png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def write_image_of(path, labels):
    """Write an image whose pixels are the colours of ``labels`` (ignored pixels: colour 3)."""
    return write_png(path, CLASS_COLORS[np.where(labels == IGNORE, 3, labels)])


def labels_from_image(image):
    """Class ids read back from an image tensor [3, H, W] written by ``write_image_of``."""
    pixels = image.permute(1, 2, 0).numpy().astype(np.int32)
    distances = ((pixels[:, :, None, :] - CLASS_COLORS[None, None].astype(np.int32)) ** 2).sum(-1)
    return distances.argmin(-1)


@pytest.fixture
def semantic_dict(tmp_path):
    labels = label_layout()
    return {
        "file_name": write_image_of(tmp_path / "image.png", labels),
        "sem_seg_file_name": write_png(tmp_path / "labels.png", labels),
        "height": HEIGHT,
        "width": WIDTH,
    }


def panoptic_ids():
    """[40, 60] segment ids: 7 (stuff) everywhere, thing 5, crowd 9, VOID in the top rows."""
    ids = np.full((HEIGHT, WIDTH), 7, dtype=np.int64)
    ids[10:25, 10:30] = 5
    ids[30:38, 40:55] = 9
    ids[:3] = 0
    return ids


SEGMENTS_INFO = [
    {"id": 5, "category_id": 1, "iscrowd": 0, "isthing": True},
    {"id": 7, "category_id": 2, "iscrowd": 0, "isthing": False},
    {"id": 9, "category_id": 0, "iscrowd": 1, "isthing": True},
]


@pytest.fixture
def panoptic_dict(tmp_path):
    ids = panoptic_ids()
    labels = np.select([ids == 0, ids == 5, ids == 9], [IGNORE, 1, 0], 2).astype(np.uint8)
    return {
        "file_name": write_image_of(tmp_path / "image.png", labels),
        "pan_seg_file_name": write_png(tmp_path / "panoptic.png", id2rgb(ids)),
        "sem_seg_file_name": write_png(tmp_path / "semantic.png", labels),
        "segments_info": SEGMENTS_INFO,
        "height": HEIGHT,
        "width": WIDTH,
    }


def square_polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def instance_annotation(category_id, segmentation, bbox, iscrowd=0):
    return {
        "category_id": category_id,
        "segmentation": segmentation,
        "bbox": bbox,
        "bbox_mode": BoxMode.XYWH_ABS,
        "iscrowd": iscrowd,
    }


def circle_mask(cx, cy, radius):
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2


@pytest.fixture
def instance_dict(tmp_path):
    circle = circle_mask(40, 20, 8)
    rle = mask_util.encode(np.asfortranarray(circle.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "file_name": write_png(tmp_path / "image.png", np.full((HEIGHT, WIDTH, 3), 90, np.uint8)),
        "height": HEIGHT,
        "width": WIDTH,
        "annotations": [
            instance_annotation(0, square_polygon(5, 5, 20, 15), [5, 5, 15, 10]),
            instance_annotation(2, rle, [32, 12, 17, 17]),
            instance_annotation(1, square_polygon(0, 30, 10, 40), [0, 30, 10, 10], iscrowd=1),
        ],
    }


def assert_target_types(instances, height, width):
    assert instances.image_size == (height, width)
    assert instances.gt_classes.dtype == torch.int64
    assert instances.gt_masks.dtype == torch.bool
    assert instances.gt_masks.shape == (len(instances.gt_classes), height, width)


# ---------------------------------------------------------------------------------------------
# Registry and builder.


def test_every_upstream_mapper_name_is_registered():
    assert set(UPSTREAM_MAPPER_NAMES) <= {name for name, _ in DATASET_MAPPER_REGISTRY}


def test_unknown_mapper_name_error_names_key_and_known_names():
    with pytest.raises(ValueError, match="INPUT.DATASET_MAPPER_NAME='nope'") as error:
        build_dataset_mapper(make_cfg("nope"))
    for name in UPSTREAM_MAPPER_NAMES:
        assert name in str(error.value)


@pytest.mark.parametrize("name", UPSTREAM_MAPPER_NAMES)
def test_mappers_are_for_training_only(name):
    with pytest.raises(ValueError, match="training mapper"):
        build_dataset_mapper(make_cfg(name), is_train=False)


def test_unknown_random_flip_is_an_error():
    with pytest.raises(ValueError, match="INPUT.RANDOM_FLIP='sideways'"):
        build_dataset_mapper(make_cfg(RANDOM_FLIP="sideways"))


# ---------------------------------------------------------------------------------------------
# Semantic mapper.


@pytest.mark.parametrize(
    "size_divisibility, padding", [(64, "fixed"), (32, "multiple"), (64, "multiple")]
)
def test_semantic_output_and_padding(semantic_dict, size_divisibility, padding):
    cfg = make_cfg(SIZE_DIVISIBILITY=size_divisibility, SIZE_DIVISIBILITY_PADDING=padding)
    out = build_dataset_mapper(cfg)(semantic_dict)
    labels = torch.from_numpy(label_layout().astype(np.int64))

    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 64, 64)
    assert out["sem_seg"].dtype == torch.int64 and out["sem_seg"].shape == (64, 64)
    assert torch.equal(out["sem_seg"][:HEIGHT, :WIDTH], labels)
    assert (out["sem_seg"][HEIGHT:] == IGNORE).all() and (out["sem_seg"][:, WIDTH:] == IGNORE).all()
    assert (out["image"][:, HEIGHT:] == 128).all() and (out["image"][:, :, WIDTH:] == 128).all()

    instances = out["instances"]
    assert_target_types(instances, 64, 64)
    assert instances.gt_classes.tolist() == [0, 1, 2]
    for class_id, mask in zip(instances.gt_classes, instances.gt_masks):
        assert torch.equal(mask, out["sem_seg"] == class_id)
    assert "sem_seg_file_name" in semantic_dict and "image" not in semantic_dict  # not modified


def test_fixed_padding_cuts_a_larger_image_as_upstream(semantic_dict):
    out = build_dataset_mapper(make_cfg(SIZE_DIVISIBILITY=32))(semantic_dict)
    assert out["image"].shape == (3, 32, 32)
    assert torch.equal(out["sem_seg"], torch.from_numpy(label_layout()[:32, :32].astype(np.int64)))


def test_unknown_padding_is_an_error():
    with pytest.raises(ValueError, match="INPUT.SIZE_DIVISIBILITY_PADDING='both'"):
        build_dataset_mapper(make_cfg(SIZE_DIVISIBILITY_PADDING="both"))


def test_semantic_without_padding_keeps_size(semantic_dict):
    out = build_dataset_mapper(make_cfg())(semantic_dict)
    assert out["image"].shape == (3, HEIGHT, WIDTH)
    assert_target_types(out["instances"], HEIGHT, WIDTH)


def test_semantic_all_ignored_gives_empty_target(tmp_path, semantic_dict):
    semantic_dict["sem_seg_file_name"] = write_png(
        tmp_path / "ignored.png", np.full((HEIGHT, WIDTH), IGNORE, np.uint8)
    )
    out = build_dataset_mapper(make_cfg())(semantic_dict)
    assert out["instances"].gt_masks.shape == (0, HEIGHT, WIDTH)
    assert out["instances"].gt_classes.shape == (0,)


def test_semantic_flip_moves_image_and_labels_together(semantic_dict):
    mapper = build_dataset_mapper(make_cfg(RANDOM_FLIP="horizontal"))
    np.random.seed(0)
    flipped_seen = set()
    for _ in range(12):
        out = mapper(semantic_dict)
        labelled = out["sem_seg"] != IGNORE
        assert torch.equal(
            torch.from_numpy(labels_from_image(out["image"]))[labelled], out["sem_seg"][labelled]
        )
        flipped_seen.add(bool(out["sem_seg"][HEIGHT - 1, 0] == 2))
    assert flipped_seen == {True, False}


def test_crop_respects_single_category_max_area(tmp_path):
    labels = np.zeros((HEIGHT, HEIGHT), np.uint8)
    labels[:, HEIGHT // 2 :] = 1
    dataset_dict = {
        "file_name": write_image_of(tmp_path / "square.png", labels),
        "sem_seg_file_name": write_png(tmp_path / "square_labels.png", labels),
    }

    def largest_shares(max_area):
        cfg = make_cfg(num_classes=2)
        cfg.INPUT.CROP.ENABLED = True
        cfg.INPUT.CROP.TYPE = "absolute"
        cfg.INPUT.CROP.SIZE = (20, 20)
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = max_area
        mapper = build_dataset_mapper(cfg)
        np.random.seed(0)
        shares = []
        for _ in range(20):
            out = mapper(dataset_dict)
            assert out["sem_seg"].shape == (20, 20)
            shares.append(torch.bincount(out["sem_seg"].flatten(), minlength=2).max().item() / 400)
        return shares

    # detectron2 gives up after 10 tries; with this layout 15 of 21 crop offsets are valid.
    assert max(largest_shares(0.9)) < 0.9
    assert max(largest_shares(1.0)) > 0.9  # unconstrained crops do exceed it


def test_semantic_color_aug_changes_image_not_labels(semantic_dict):
    mapper = build_dataset_mapper(make_cfg(COLOR_AUG_SSD=True))
    np.random.seed(1)
    outputs = [mapper(semantic_dict) for _ in range(4)]
    assert any(not torch.equal(o["image"], outputs[0]["image"]) for o in outputs[1:])
    for out in outputs:
        assert torch.equal(out["sem_seg"], torch.from_numpy(label_layout().astype(np.int64)))


def test_bad_label_value_error_names_file_and_value(tmp_path, semantic_dict):
    labels = label_layout()
    labels[0, 0] = 7
    semantic_dict["sem_seg_file_name"] = write_png(tmp_path / "bad_labels.png", labels)
    with pytest.raises(DatasetFileError, match=r"bad_labels\.png.*\[7\].*NUM_CLASSES"):
        build_dataset_mapper(make_cfg(num_classes=3))(semantic_dict)


def test_label_map_of_wrong_size_is_an_error(tmp_path, semantic_dict):
    semantic_dict["sem_seg_file_name"] = write_png(
        tmp_path / "small.png", np.zeros((10, 10), np.uint8)
    )
    with pytest.raises(DatasetFileError, match=r"small\.png: label file is 10x10"):
        build_dataset_mapper(make_cfg())(semantic_dict)


def test_missing_image_error_names_file(tmp_path, semantic_dict):
    semantic_dict["file_name"] = str(tmp_path / "absent.jpg")
    with pytest.raises(FileNotFoundError, match=r"absent\.jpg"):
        build_dataset_mapper(make_cfg())(semantic_dict)


def test_corrupt_image_error_names_file(tmp_path, semantic_dict):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not an image at all")
    semantic_dict["file_name"] = str(corrupt)
    with pytest.raises(OSError, match=r"corrupt\.jpg"):
        build_dataset_mapper(make_cfg())(semantic_dict)


def test_missing_label_file_key_is_an_error(semantic_dict):
    del semantic_dict["sem_seg_file_name"]
    with pytest.raises(KeyError, match="sem_seg_file_name"):
        build_dataset_mapper(make_cfg())(semantic_dict)


def test_mapper_built_from_explicit_arguments(semantic_dict):
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[T.RandomFlip(prob=1.0)],
        image_format="RGB",
        ignore_label=IGNORE,
        size_divisibility=-1,
        num_classes=4,
    )
    out = mapper(semantic_dict)
    flipped = torch.from_numpy(label_layout()[:, ::-1].astype(np.int64))
    assert torch.equal(out["sem_seg"], flipped)


# ---------------------------------------------------------------------------------------------
# Panoptic mapper.


@pytest.mark.parametrize("with_sem_seg", [True, False])
def test_panoptic_targets_skip_crowd_and_void(panoptic_dict, with_sem_seg):
    if not with_sem_seg:
        del panoptic_dict["sem_seg_file_name"]
    out = build_dataset_mapper(make_cfg("mask_former_panoptic", SIZE_DIVISIBILITY=64))(
        panoptic_dict
    )
    ids = torch.from_numpy(panoptic_ids())
    instances = out["instances"]
    assert out["image"].shape == (3, 64, 64)
    assert_target_types(instances, 64, 64)
    assert instances.gt_classes.tolist() == [1, 2]
    for segment_id, mask in zip((5, 7), instances.gt_masks):
        assert torch.equal(mask[:HEIGHT, :WIDTH], ids == segment_id)
        assert not mask[HEIGHT:].any() and not mask[:, WIDTH:].any()
    assert ("sem_seg" in out) == with_sem_seg
    if with_sem_seg:
        assert out["sem_seg"].shape == (64, 64) and (out["sem_seg"][HEIGHT:] == IGNORE).all()


@pytest.mark.parametrize("mapper_name", ["mask_former_panoptic", "detr_panoptic"])
def test_panoptic_segment_absent_from_image_is_kept_unless_dropped(panoptic_dict, mapper_name):
    panoptic_dict["segments_info"] = SEGMENTS_INFO + [{"id": 11, "category_id": 3, "iscrowd": 0}]
    kept = build_dataset_mapper(make_cfg(mapper_name))(panoptic_dict)["instances"]
    assert kept.gt_classes.tolist() == [1, 2, 3]  # as upstream, with an empty mask
    assert not kept.gt_masks[2].any()
    cfg = make_cfg(mapper_name, DROP_EMPTY_TARGETS=True)
    assert build_dataset_mapper(cfg)(panoptic_dict)["instances"].gt_classes.tolist() == [1, 2]


def test_panoptic_png_is_resized_as_an_rgb_image_with_pil_nearest(panoptic_dict):
    cfg = make_cfg("mask_former_panoptic", MIN_SIZE_TRAIN=(HEIGHT * 3 // 4 + 1,))
    instances = build_dataset_mapper(cfg)(panoptic_dict)["instances"]
    rgb = np.asarray(Image.open(panoptic_dict["pan_seg_file_name"]).convert("RGB"))
    height, width = instances.image_size
    resized = np.asarray(Image.fromarray(rgb).resize((width, height), Image.NEAREST))
    ids = torch.from_numpy(rgb2id(resized))
    assert torch.equal(instances.gt_masks[0], ids == 5)
    assert torch.equal(instances.gt_masks[1], ids == 7)


def test_panoptic_without_segments_gives_empty_target(panoptic_dict):
    panoptic_dict["segments_info"] = []
    out = build_dataset_mapper(make_cfg("mask_former_panoptic"))(panoptic_dict)
    assert out["instances"].gt_masks.shape == (0, HEIGHT, WIDTH)


def test_panoptic_bad_category_error_names_file_and_value(panoptic_dict):
    panoptic_dict["segments_info"] = [{"id": 5, "category_id": 9, "iscrowd": 0}]
    with pytest.raises(ValueError, match=r"panoptic\.png.*\[9\]"):
        build_dataset_mapper(make_cfg("mask_former_panoptic"))(panoptic_dict)


def test_panoptic_crop_guided_by_segment_classes_without_sem_seg(panoptic_dict):
    del panoptic_dict["sem_seg_file_name"]
    cfg = make_cfg("mask_former_panoptic")
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (20, 20)
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 0.9
    out = build_dataset_mapper(cfg)(panoptic_dict)
    assert out["image"].shape == (3, 20, 20)
    assert_target_types(out["instances"], 20, 20)


# ---------------------------------------------------------------------------------------------
# Instance mapper.


def test_instance_masks_from_polygons_and_rle(instance_dict):
    out = build_dataset_mapper(
        make_cfg("mask_former_instance", num_classes=3, SIZE_DIVISIBILITY=64)
    )(instance_dict)
    instances = out["instances"]
    assert out["image"].shape == (3, 64, 64)
    assert "annotations" not in out
    assert_target_types(instances, 64, 64)
    assert instances.gt_classes.tolist() == [0, 2]  # the crowd annotation is skipped
    square = np.zeros((64, 64), bool)
    square[:HEIGHT, :WIDTH] = polygons_to_bitmask(
        [np.array(square_polygon(5, 5, 20, 15)[0])], HEIGHT, WIDTH
    )
    assert np.array_equal(instances.gt_masks[0].numpy(), square)
    assert square[5:15, 5:20].all() and square.sum() < 16 * 11
    circle = np.zeros((64, 64), bool)
    circle[:HEIGHT, :WIDTH] = circle_mask(40, 20, 8)
    assert np.array_equal(instances.gt_masks[1].numpy(), circle)


def test_instance_flip_moves_masks(instance_dict):
    mapper = MaskFormerInstanceDatasetMapper(
        augmentations=[T.RandomFlip(prob=1.0)],
        image_format="RGB",
        size_divisibility=-1,
        num_classes=3,
    )
    circle = mapper(instance_dict)["instances"].gt_masks[1].numpy()
    assert np.array_equal(circle, circle_mask(40, 20, 8)[:, ::-1])


def test_instance_crop_cuts_polygon_and_rle_masks(instance_dict):
    mapper = MaskFormerInstanceDatasetMapper(
        augmentations=[T.CropTransform(10, 5, 30, 20)],
        image_format="RGB",
        size_divisibility=-1,
        num_classes=3,
        cut_polygons=False,
    )
    instances = mapper(instance_dict)["instances"]
    assert instances.gt_masks.shape == (2, 20, 30)
    square = polygons_to_bitmask([np.array(square_polygon(5, 5, 20, 15)[0])], HEIGHT, WIDTH)
    assert np.array_equal(instances.gt_masks[0].numpy(), square[5:25, 10:40])
    assert np.array_equal(instances.gt_masks[1].numpy(), circle_mask(40, 20, 8)[5:25, 10:40])


def crop_away_first_annotation(drop_empty_targets):
    return MaskFormerInstanceDatasetMapper(
        augmentations=[T.CropTransform(30, 10, 30, 30)],
        image_format="RGB",
        size_divisibility=-1,
        num_classes=3,
        drop_empty_targets=drop_empty_targets,
        cut_polygons=False,
    )


def test_instance_cropped_away_is_kept_unless_dropped(instance_dict):
    kept = crop_away_first_annotation(False)(instance_dict)["instances"]
    assert kept.gt_classes.tolist() == [0, 2] and not kept.gt_masks[0].any()
    dropped = crop_away_first_annotation(True)(instance_dict)["instances"]
    assert dropped.gt_classes.tolist() == [2]


def test_polygon_cut_needs_shapely_with_a_clear_error(instance_dict, monkeypatch):
    def no_shapely(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'shapely'", name="shapely")

    monkeypatch.setattr(T.CropTransform, "apply_polygons", no_shapely)
    mapper = MaskFormerInstanceDatasetMapper(
        augmentations=[T.CropTransform(10, 5, 30, 20)],
        image_format="RGB",
        size_divisibility=-1,
        num_classes=3,
    )
    with pytest.raises(ModuleNotFoundError, match="INPUT.CROP_POLYGONS_WITH_SHAPELY"):
        mapper(instance_dict)


def test_instance_without_annotations_gives_empty_target(instance_dict):
    instance_dict["annotations"] = []
    out = build_dataset_mapper(make_cfg("mask_former_instance", num_classes=3))(instance_dict)
    assert out["instances"].gt_masks.shape == (0, HEIGHT, WIDTH)
    assert out["instances"].gt_classes.shape == (0,)


def test_instance_bad_category_error_names_file_and_value(instance_dict):
    instance_dict["annotations"][0]["category_id"] = 5
    with pytest.raises(ValueError, match=r"image\.png.*\[5\]"):
        build_dataset_mapper(make_cfg("mask_former_instance", num_classes=3))(instance_dict)


# ---------------------------------------------------------------------------------------------
# Large-scale jitter mappers.


@pytest.mark.parametrize("max_scale", [0.5, 2.0])
def test_lsj_instance_output_is_image_size(instance_dict, max_scale):
    cfg = make_cfg(
        "coco_instance_lsj", num_classes=3, IMAGE_SIZE=48, MIN_SCALE=max_scale, MAX_SCALE=max_scale
    )
    cfg.INPUT.CROP_POLYGONS_WITH_SHAPELY = False
    out = build_dataset_mapper(cfg)(instance_dict)
    instances = out["instances"]
    assert out["image"].shape == (3, 48, 48)
    assert out["padding_mask"].dtype == torch.bool and out["padding_mask"].shape == (48, 48)
    assert out["padding_mask"].any() == (max_scale < 1)
    assert_target_types(instances, 48, 48)
    assert not instances.gt_masks[:, out["padding_mask"]].any()
    assert (out["image"][:, out["padding_mask"]] == 128).all()
    assert len(instances.gt_boxes) == len(instances)
    for box, mask in zip(instances.gt_boxes.tensor, instances.gt_masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_lsj_instance_boxes_of_cut_polygons_are_their_extents_as_upstream(instance_dict):
    cfg = make_cfg("coco_instance_lsj", num_classes=3, IMAGE_SIZE=48, MIN_SCALE=0.8, MAX_SCALE=0.8)
    # Float corners, as COCO's: detectron2 transforms integer ones in place, truncated (upstream too).
    instance_dict["annotations"][0]["segmentation"] = [[5.0, 5.0, 20.0, 5.0, 20.0, 15.0, 5.0, 15.0]]
    out = build_dataset_mapper(cfg)(instance_dict)
    rows, columns = torch.nonzero(~out["padding_mask"], as_tuple=True)
    height, width = rows.max().item() + 1, columns.max().item() + 1  # the resized image
    assert (height, width) != (HEIGHT, WIDTH)
    boxes = out["instances"].gt_boxes.tensor
    # The square polygon's corners, resized (upstream's PolygonMasks box) ...
    x0, y0, x1, y1 = 5 * width / WIDTH, 5 * height / HEIGHT, 20 * width / WIDTH, 15 * height / HEIGHT
    assert torch.allclose(boxes[0], torch.tensor([x0, y0, x1, y1]), atol=1e-4)
    # ... and the RLE circle's tight mask box.
    ys, xs = torch.nonzero(out["instances"].gt_masks[1], as_tuple=True)
    assert boxes[1].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_lsj_panoptic_pads_with_void_and_makes_no_sem_seg(panoptic_dict):
    cfg = make_cfg("coco_panoptic_lsj", IMAGE_SIZE=64, MIN_SCALE=0.5, MAX_SCALE=0.5)
    out = build_dataset_mapper(cfg)(panoptic_dict)
    padding = out["padding_mask"]
    assert out["image"].shape == (3, 64, 64) and padding.any()
    assert "sem_seg" not in out  # as upstream
    instances = out["instances"]
    assert_target_types(instances, 64, 64)
    assert instances.gt_classes.tolist() == [1, 2]
    assert len(instances.gt_boxes) == 2
    assert not instances.gt_masks[:, padding].any()


def with_rle_only(instance_dict):
    instance_dict["annotations"] = instance_dict["annotations"][1:2]
    return instance_dict


def pad_segmentation_with_255(monkeypatch):
    """Make FixedSizeCrop pad label maps with 255, as detectron2 after v0.6 does."""
    get_pad = T.FixedSizeCrop._get_pad

    def get_pad_255(self, image):
        pad = get_pad(self, image)
        pad.seg_pad_value = 255
        return pad

    monkeypatch.setattr(T.FixedSizeCrop, "_get_pad", get_pad_255)


@pytest.mark.parametrize("mapper_name", ["coco_instance_lsj", "coco_panoptic_lsj"])
def test_lsj_targets_do_not_depend_on_the_segmentation_pad_value(
    instance_dict, panoptic_dict, monkeypatch, mapper_name
):
    dataset_dict = panoptic_dict if mapper_name == "coco_panoptic_lsj" else instance_dict
    cfg = make_cfg(mapper_name, IMAGE_SIZE=64, MIN_SCALE=0.5, MAX_SCALE=0.5)
    cfg.INPUT.CROP_POLYGONS_WITH_SHAPELY = False
    mapper = build_dataset_mapper(cfg)
    v06 = mapper(dataset_dict)
    pad_segmentation_with_255(monkeypatch)
    assert (T.FixedSizeCrop((64, 64))._get_pad(np.zeros((32, 48, 3))).apply_segmentation(
        np.zeros((32, 48), np.uint8)
    )[40:] == 255).all()
    newer = mapper(dataset_dict)
    assert v06["padding_mask"].any()
    for key in ("image", "padding_mask"):
        assert torch.equal(v06[key], newer[key])
    for field in ("gt_classes", "gt_masks"):
        assert torch.equal(v06["instances"].get(field), newer["instances"].get(field))


# ---------------------------------------------------------------------------------------------
# DETR panoptic mapper (MaskFormer v1's COCO panoptic).


def detr_cfg(**input_options):
    cfg = make_cfg("detr_panoptic", **input_options)
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute_range"
    cfg.INPUT.CROP.SIZE = (100, 150)
    return cfg


def test_detr_panoptic_resizes_without_padding_and_skips_crowd(panoptic_dict):
    cfg = make_cfg("detr_panoptic", MIN_SIZE_TRAIN=(20,))
    out = build_dataset_mapper(cfg)(panoptic_dict)
    assert out["image"].shape == (3, 20, 30)
    assert "sem_seg" not in out
    instances = out["instances"]
    assert_target_types(instances, 20, 30)
    assert instances.gt_classes.tolist() == [1, 2]
    rgb = np.asarray(Image.open(panoptic_dict["pan_seg_file_name"]).convert("RGB"))
    ids = torch.from_numpy(rgb2id(np.asarray(Image.fromarray(rgb).resize((30, 20), Image.NEAREST))))
    assert torch.equal(instances.gt_masks[0], ids == 5)


def test_detr_panoptic_crops_half_of_the_time(panoptic_dict):
    mapper = build_dataset_mapper(detr_cfg())
    np.random.seed(0)
    # Without a crop the 40x60 image is resized to 40x60; the crop pipeline resizes it to at least
    # 400 on the shortest edge, crops 100 to 150, then resizes the crop's shortest edge to 40.
    sizes = {tuple(mapper(panoptic_dict)["image"].shape[1:]) for _ in range(30)}
    assert (HEIGHT, WIDTH) in sizes and len(sizes) > 1
    assert all(min(size) == HEIGHT for size in sizes)


def test_detr_panoptic_draws_no_coin_without_crop(panoptic_dict):
    mapper = build_dataset_mapper(make_cfg("detr_panoptic"))
    assert not any(isinstance(a, RandomPipeline) for a in mapper.augmentations.augs)
    np.random.seed(3)
    mapper(panoptic_dict)
    after = np.random.rand()
    np.random.seed(3)
    np.random.rand()  # would be the coin
    assert np.random.rand() != after


def test_detr_panoptic_flip_moves_masks(panoptic_dict):
    mapper = DETRPanopticDatasetMapper(
        augmentations=[T.RandomFlip(prob=1.0)],
        image_format="RGB",
        num_classes=4,
    )
    masks = mapper(panoptic_dict)["instances"].gt_masks
    assert torch.equal(masks[0], torch.from_numpy(panoptic_ids()[:, ::-1].copy() == 5))


# ---------------------------------------------------------------------------------------------
# Colour augmentation.


def test_color_aug_ssd_transform_keeps_shape_and_geometry():
    image = np.random.default_rng(0).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    identity = ColorAugSSDTransform("BGR")
    assert np.array_equal(identity.apply_image(image), image)
    transform = ColorAugSSDTransform(
        "RGB", brightness_delta=10.0, contrast_factor=1.2, saturation_factor=0.7, hue_delta=5
    )
    out = transform.apply_image(image)
    assert out.shape == image.shape and out.dtype == np.uint8 and not np.array_equal(out, image)
    coords = np.array([[1.0, 2.0]])
    assert np.array_equal(transform.apply_coords(coords), coords)


def test_color_aug_ssd_needs_a_known_format():
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        ColorAugSSD("YUV-BT.601").get_transform(np.zeros((4, 4, 3), np.uint8))


@pytest.mark.parametrize("image_format", ["RGB", "BGR"])
def test_color_aug_ssd_draws_and_pixels_equal_detectron2_point_rend(image_format):
    image = np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)
    augmentation = ColorAugSSD(image_format)
    reference = PointRendColorAugSSDTransform(image_format)
    for seed in range(40):
        random.seed(seed)
        expected = reference.apply_image(image)
        after_reference = random.random()
        random.seed(seed)
        out = augmentation.get_transform(image).apply_image(image)
        assert np.array_equal(out, expected), seed
        assert random.random() == after_reference  # the same number of draws
