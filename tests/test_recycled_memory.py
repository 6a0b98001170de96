"""Outputs in recycled memory (mask_former.modeling.fast_paths.recycled_memory): a block is handed out again only
once nothing can read it, at most one free block is kept per role, and the model's results are the same with and
without it."""
import gc

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from helpers import tiny_cfg
from mask_former.modeling.fast_paths.recycled_memory import (
    empty_output,
    kept_output_bytes,
    recycled_tensor,
    release_output_memory,
)


@pytest.fixture(autouse=True)
def no_kept_blocks():
    release_output_memory()
    yield
    release_output_memory()


def test_a_block_returns_once_its_tensor_is_gone():
    first = recycled_tensor("test", (4, 1000), torch.float32)
    address = first.data_ptr()
    assert kept_output_bytes() == 0
    del first
    assert kept_output_bytes() == 16000
    second = recycled_tensor("test", (2, 3, 500), torch.float32)
    assert second.data_ptr() == address and second.shape == (2, 3, 500) and second.dtype == torch.float32
    assert second.is_contiguous() and kept_output_bytes() == 0


HOLDERS = {"a view": lambda t: t.view(-1), "a slice": lambda t: t[2:], "a numpy array": lambda t: t.numpy()}


@pytest.mark.parametrize("hold", list(HOLDERS))
def test_a_block_is_not_handed_out_while_anything_reads_it(hold):
    first = recycled_tensor("test", (4, 1000), torch.float32).fill_(7)
    held = HOLDERS[hold](first)
    del first
    gc.collect()
    second = recycled_tensor("test", (4, 1000), torch.float32).fill_(-1)
    assert (np.asarray(held) == 7).all()
    del held, second
    assert kept_output_bytes() == 16000


def test_one_free_block_is_kept_per_role_the_larger():
    small, large = recycled_tensor("test", (10,), torch.float32), recycled_tensor("test", (1000,), torch.float64)
    large_address = large.data_ptr()
    del large, small
    assert kept_output_bytes() == 8000
    other = recycled_tensor("other role", (10,), torch.float32)
    assert other.data_ptr() != large_address
    fits = recycled_tensor("test", (3, 7), torch.int64)
    assert fits.data_ptr() == large_address
    too_large = recycled_tensor("test", (1001,), torch.float64)
    del fits, too_large, other
    assert kept_output_bytes() == 8008 + 40


def test_release_frees_the_kept_blocks_and_empty_tensors_take_none():
    recycled = recycled_tensor("test", (0, 5), torch.float32)
    assert recycled.shape == (0, 5)
    del recycled
    assert kept_output_bytes() == 0
    recycled_tensor("test", (5,), torch.float32)
    assert kept_output_bytes() == 20
    release_output_memory()
    assert kept_output_bytes() == 0


def test_only_cpu_outputs_are_recycled_and_only_when_asked():
    like = torch.zeros(2, dtype=torch.float64)
    empty_output("test", (3, 4), like=like, recycle=False)
    assert kept_output_bytes() == 0
    out = empty_output("test", (3, 4), like=like, recycle=True)
    assert out.dtype == torch.float64 and out.shape == (3, 4)
    del out
    assert kept_output_bytes() == 96
    meta = empty_output("test", (3, 4), like=torch.zeros(2, device="meta"), recycle=True)
    assert meta.device.type == "meta" and kept_output_bytes() == 96


def tiny_model(recycle: bool):
    """Semantic, panoptic and instance inference on."""
    cfg = tiny_cfg()
    cfg.MODEL.MASK_FORMER.TEST.RECYCLE_OUTPUT_MEMORY = recycle
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_the_model_writes_the_next_outputs_into_the_last_ones_memory():
    assert not tiny_cfg().MODEL.MASK_FORMER.TEST.RECYCLE_OUTPUT_MEMORY  # opt-in: it raises the peak
    image = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    inputs = [{"image": image}]
    with torch.no_grad():
        reference = tiny_model(recycle=False)(inputs)[0]
        assert kept_output_bytes() == 0
        model = tiny_model(recycle=True)
        first = model(inputs)[0]
        addresses = first["sem_seg"].data_ptr(), first["instances"].pred_masks.data_ptr()
        del first
        assert kept_output_bytes() > 0
        second = model(inputs)[0]
    assert (second["sem_seg"].data_ptr(), second["instances"].pred_masks.data_ptr()) == addresses
    assert torch.equal(second["sem_seg"], reference["sem_seg"])
    assert torch.equal(second["panoptic_seg"][0], reference["panoptic_seg"][0])
    assert torch.equal(second["instances"].pred_masks, reference["instances"].pred_masks)
    assert torch.equal(second["instances"].scores, reference["instances"].scores)
