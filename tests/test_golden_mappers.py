"""The training mappers return upstream's tensors, element for element, on the golden records
(``../shared/golden/mappers``, made by upstream Mask2Former's mappers; see its README)."""
import pickle
import random

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog

from conftest import REPO
from helpers import base_cfg
from mask_former.data.dataset_mappers import build_dataset_mapper

CONFIG = REPO / "configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"
TRAIN_NAME = "golden_mappers_train"  # any name whose metadata has ignore_label=255
SEEDS_PER_RECORD = 3
# The split of records.pkl that upstream ran each mapper on.
SPLITS = {
    "mask_former_semantic": "demo_shapes_sem_seg_train",
    "mask_former_panoptic": "demo_shapes_panoptic_train",
    "mask_former_instance": "demo_shapes_instance_train",
}


def upstream_cfg(mapper_name):
    """The README's config: upstream's ADE20K semantic config, scaled down, colour aug on."""
    cfg = base_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(
        [
            "INPUT.MIN_SIZE_TRAIN", "(80,88,96,104,112)",
            "INPUT.MAX_SIZE_TRAIN", "160",
            "INPUT.CROP.SIZE", "(96,96)",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "6",
            "INPUT.FORMAT", "RGB",
            "INPUT.SIZE_DIVISIBILITY", "-1",
            "INPUT.DATASET_MAPPER_NAME", mapper_name,
        ]
    )
    assert cfg.INPUT.COLOR_AUG_SSD
    MetadataCatalog.get(TRAIN_NAME).set(ignore_label=255)
    cfg.DATASETS.TRAIN = (TRAIN_NAME,)
    return cfg


def absolute_paths(record, root):
    """The record with its ``*file_name`` paths made absolute (they are relative to ``root``)."""
    return {
        key: str(root / value) if key.endswith("file_name") else value
        for key, value in record.items()
    }


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.mark.parametrize("mapper_name", sorted(SPLITS))
def test_mapper_equals_upstream_on_golden_records(golden_dir, mapper_name):
    root = golden_dir("mappers")
    with open(root / "records.pkl", "rb") as f:
        records = pickle.load(f)[SPLITS[mapper_name]]
    expected = torch.load(root / f"{mapper_name}.pt", weights_only=False)
    assert len(expected) == len(records) * SEEDS_PER_RECORD

    mapper = build_dataset_mapper(upstream_cfg(mapper_name))
    for i, record in enumerate(records):
        record = absolute_paths(record, root)
        for s in range(SEEDS_PER_RECORD):
            want = expected[i * SEEDS_PER_RECORD + s]
            seed_all(1000 * i + s)
            out = mapper(record)
            where = f"record {i}, seed {s}"
            assert torch.equal(out["image"], want["image"]), where
            if want["sem_seg"] is None:
                assert "sem_seg" not in out, where
            else:
                assert torch.equal(out["sem_seg"], want["sem_seg"]), where
            assert torch.equal(out["instances"].gt_classes, want["gt_classes"]), where
            assert torch.equal(out["instances"].gt_masks, want["gt_masks"]), where
