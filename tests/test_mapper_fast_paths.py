"""The dataset mappers' fast paths against the plain forms beside them, on random inputs."""
import numpy as np
import pytest
import torch

from mask_former.data.dataset_mappers.targets import (
    mask_boxes,
    mask_boxes_reference,
    present_labels,
    present_labels_reference,
)
from mask_former.data.dataset_mappers.validation import (
    check_class_ids,
    unknown_class_ids,
    unknown_class_ids_reference,
)
from mask_former.errors import DatasetFileError

NUM_CLASSES = 150
IGNORE = 255


def random_label_map(rng, dtype, low, high, shape=(37, 53)):
    return rng.integers(low, high, shape).astype(dtype)


# (dtype, lowest and highest value drawn + 1): label maps as PIL reads them, and odd ones.
LABEL_MAPS = [
    (np.uint8, 0, NUM_CLASSES),  # valid
    (np.uint8, 0, 256),  # unknown ids and the ignore label
    (np.uint16, 140, 400),
    (np.int32, -3, 160),
    (np.float64, -2, 152),
]


@pytest.mark.parametrize("dtype, low, high", LABEL_MAPS)
@pytest.mark.parametrize("ignore_label", [IGNORE, None, -1])
def test_unknown_class_ids_equal_the_sorting_reference(dtype, low, high, ignore_label):
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = random_label_map(rng, dtype, low, high)
        fast = unknown_class_ids(labels, NUM_CLASSES, ignore_label)
        reference = unknown_class_ids_reference(labels, NUM_CLASSES, ignore_label)
        assert fast.dtype == reference.dtype and np.array_equal(fast, reference)
    assert len(unknown_class_ids(np.zeros((0, 4), np.uint8), NUM_CLASSES, IGNORE)) == 0
    assert len(unknown_class_ids([], NUM_CLASSES)) == 0


def test_class_id_errors_name_the_file_and_the_unknown_ids():
    labels = np.full((8, 8), 3, np.uint8)
    labels[0, :3] = [IGNORE, 200, 150]
    with pytest.raises(DatasetFileError, match=r"^labels\.png: class ids \[150, 200\] are not in \[0, 150\) "
                       r"\(MODEL\.SEM_SEG_HEAD\.NUM_CLASSES\) or the ignore label 255$"):
        check_class_ids(labels, NUM_CLASSES, "labels.png", IGNORE)
    # Without an ignore label, 255 is an unknown id like any other.
    with pytest.raises(DatasetFileError, match=r"class ids \[150, 200, 255\] are not in \[0, 150\) "
                       r"\(MODEL\.SEM_SEG_HEAD\.NUM_CLASSES\)$"):
        check_class_ids(labels, NUM_CLASSES, "labels.png")
    labels[0, 1:3] = 149
    check_class_ids(labels, NUM_CLASSES, "labels.png", IGNORE)  # valid: no error
    with pytest.raises(DatasetFileError, match=r"segments_info of a\.png: class ids \[-1\]"):
        check_class_ids([4, -1], NUM_CLASSES, "segments_info of a.png")


@pytest.mark.parametrize("dtype, low, high", [(np.int64, 0, 256), (np.int64, 0, 8), (np.int64, -1, 20),
                                              (np.uint8, 0, 256), (np.int64, 0, 1 << 21)])
@pytest.mark.parametrize("ignore_label", [IGNORE, -1])
def test_present_labels_equal_the_sorting_reference(dtype, low, high, ignore_label):
    rng = np.random.default_rng(1)
    for _ in range(5):
        labels = random_label_map(rng, dtype, low, high)
        assert np.array_equal(present_labels(labels, ignore_label), present_labels_reference(labels, ignore_label))
    assert present_labels(np.full((4, 4), ignore_label, np.int64), ignore_label).shape == (0,)
    assert present_labels(np.zeros((0, 4), dtype), ignore_label).shape == (0,)


@pytest.mark.parametrize("num_masks", [0, 1, 7])
def test_mask_boxes_equal_detectron2_bitmasks_boxes(num_masks):
    generator = torch.Generator().manual_seed(num_masks)
    masks = torch.rand((num_masks, 23, 31), generator=generator) > 0.97
    masks[:2, 5:9, 3:4] = True
    if num_masks > 2:
        masks[2] = False  # an empty mask has an all-zero box
        masks[3] = False
        masks[3, 22, 30] = True  # a pixel at the bottom right corner
    fast, reference = mask_boxes(masks).tensor, mask_boxes_reference(masks).tensor
    assert fast.dtype == reference.dtype == torch.float32
    assert torch.equal(fast, reference)
