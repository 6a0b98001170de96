"""The training loader's packed transfer of batches from its workers."""
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from mask_former.engine.train_loader import (
    PACK_ALIGNMENT,
    IterationBatchSampler,
    IterationDataLoader,
    SeededMapDataset,
    pack_batch,
    unpack_batch,
)


def mapped_record(record):
    """A mapper's kind of output, with random augmentation-like draws from every global generator."""
    size = 8 + record["index"] % 3
    instances = Instances((size, size))
    count = int(np.random.randint(0, 3))
    instances.gt_classes = torch.randint(0, 5, (count,))
    instances.gt_masks = torch.rand(count, size, size) > 0.5
    instances.gt_boxes = Boxes(torch.rand(count, 4))
    return {
        "image": torch.randint(0, 256, (3, size, size), dtype=torch.uint8),
        "sem_seg": torch.randint(0, 5, (size, size)),
        "instances": instances,
        "file_name": f"{record['index']}.jpg",
    }


def assert_same(actual, expected):
    assert type(actual) is type(expected)
    if isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        assert torch.equal(actual, expected)
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e)
    elif isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key])
    elif isinstance(expected, Instances):
        assert actual.image_size == expected.image_size
        assert_same(actual.get_fields(), expected.get_fields())
    elif isinstance(expected, Boxes):
        assert_same(actual.tensor, expected.tensor)
    else:
        assert actual == expected


def test_pack_batch_round_trips_every_kind_of_tensor():
    torch.manual_seed(0)
    batch = [mapped_record({"index": i}) for i in range(3)]
    batch.append({
        "non_contiguous": torch.arange(12.0).reshape(3, 4).t(),
        "scalar": torch.tensor(7, dtype=torch.int16),
        "empty": torch.zeros(0, 5, dtype=torch.float64),
        "bfloat16": torch.randn(5).to(torch.bfloat16),
        "needs_grad": torch.ones(2, requires_grad=True),  # left to ordinary pickling
        "array": np.arange(5),
        "same_as_image": batch[0]["image"],
    })
    packed = pack_batch(batch)
    assert all(offset % PACK_ALIGNMENT == 0 for offset, _, _ in packed.layout)
    assert len(packed.layout) == 3 * 5 + 4  # image, sem_seg, gt_classes, gt_masks, gt_boxes; 4 in the last
    unpacked = unpack_batch(packed)
    assert_same(unpacked, batch)
    assert unpacked[-1]["needs_grad"].requires_grad
    assert unpacked[-1]["same_as_image"] is unpacked[0]["image"]
    assert unpacked[0]["image"].untyped_storage().data_ptr() == packed.buffer.untyped_storage().data_ptr()


def loader(num_workers, pack_batches=True):
    records = [{"index": i, "width": 10, "height": 8 + i % 2} for i in range(7)]
    sampler = IterationBatchSampler(
        epoch_order=lambda generator: torch.randperm(len(records), generator=generator),
        group_ids=[int(r["width"] <= r["height"]) for r in records],
        total_batch_size=3,
        seed=5,
    )
    return IterationDataLoader(SeededMapDataset(records, mapped_record), sampler, num_workers,
                               pack_batches=pack_batches)


def first_batches(data_loader, count):
    iterator = iter(data_loader)
    return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize("pack_batches", [True, False])
def test_workers_deliver_the_batches_of_the_main_process(pack_batches):
    data_loader = loader(1, pack_batches)
    assert data_loader.pack_batches == pack_batches
    assert_same(first_batches(data_loader, 4), first_batches(loader(0), 4))
    assert not loader(0).pack_batches
