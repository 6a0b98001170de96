"""The video model (Mask2Former-VIS) reproduces upstream's outputs and training losses for the fixture
../shared/golden/m2f_ytvis_video (README there), and its fast inference keeps upstream's outputs on other
clips: other lengths, output sizes, frame chunks and windows as long as the video."""
import functools

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from PIL import Image

from helpers import assert_training_matches_upstream, golden_cfg
from mask_former.checkpoint import MaskFormerCheckpointer

FIXTURE = "m2f_ytvis_video"


def read_frames(folder, cfg):
    return [
        torch.from_numpy(np.array(Image.open(folder / f"frame{i}.png").convert(cfg.INPUT.FORMAT))).permute(2, 0, 1)
        .contiguous()
        for i in range(2)
    ]


@functools.lru_cache(maxsize=1)
def eval_model(folder):
    """``(model, cfg)`` of the fixture, weights loaded, in eval mode; built once for the tests that read it."""
    cfg = golden_cfg(folder)
    model = build_model(cfg).eval()
    MaskFormerCheckpointer(model, for_inference=True).load(str(folder / "weights.pth"))
    return model, cfg


def pairs(output):
    """The (score, class) pairs sorted by score, and the indices that sort them."""
    order = sorted(range(len(output["pred_scores"])), key=lambda i: output["pred_scores"][i])
    return [output["pred_scores"][i] for i in order], [output["pred_labels"][i] for i in order], order


def assert_same_outputs(ours, theirs, agreement=0.999):
    """Upstream's notion of the same video outputs: scores to 1e-4, the same classes (as sets of pairs) and
    masks agreeing on ``agreement`` of their pixels."""
    assert ours["image_size"] == theirs["image_size"]
    our_scores, our_labels, our_order = pairs(ours)
    their_scores, their_labels, their_order = pairs(theirs)
    torch.testing.assert_close(torch.tensor(our_scores), torch.tensor(their_scores), atol=1e-4, rtol=0)
    assert our_labels == their_labels
    our_masks = torch.stack([ours["pred_masks"][i] for i in our_order])
    their_masks = torch.stack([theirs["pred_masks"][i] for i in their_order])
    assert our_masks.dtype == torch.bool and our_masks.shape == their_masks.shape
    assert (our_masks == their_masks).float().mean().item() >= agreement


def test_golden_video_checkpoint_loads_with_no_missing_or_unexpected_keys(golden_dir):
    folder = golden_dir(FIXTURE)
    model = build_model(golden_cfg(folder))
    # Strict at inference: a missing, unexpected or mismatched key raises.
    MaskFormerCheckpointer(model, for_inference=True).load(str(folder / "weights.pth"))


def test_golden_video_outputs(golden_dir):
    model, cfg = eval_model(golden_dir(FIXTURE))
    folder = golden_dir(FIXTURE)
    reference = torch.load(folder / "outputs.pt", weights_only=False)
    height, width = reference["height"], reference["width"]
    with torch.no_grad():
        output = model([{"image": read_frames(folder, cfg), "height": height, "width": width}])
    assert set(output) == {"image_size", "pred_scores", "pred_labels", "pred_masks"}
    assert len(output["pred_scores"]) == len(output["pred_labels"]) == len(output["pred_masks"]) == 10
    masks = np.unpackbits(reference["pred_masks_packed"].numpy(), axis=-1)[..., :width].astype(bool)
    expected = {
        "image_size": (height, width),
        "pred_scores": reference["pred_scores"].tolist(),
        "pred_labels": reference["pred_labels"].tolist(),
        "pred_masks": list(torch.from_numpy(masks)),
    }
    assert_same_outputs(output, expected)


def moving_targets(frames: int, height: int, width: int):
    """Per frame, the README's two objects (classes 3 and 17) shifted 8 pixels right per frame."""
    targets = []
    for t in range(frames):
        instances = Instances((height, width))
        instances.gt_classes = torch.tensor([3, 17])
        instances.gt_ids = torch.tensor([0, 1])
        masks = torch.zeros(2, height, width, dtype=torch.bool)
        masks[0, :, 8 * t:width // 3 + 8 * t] = True
        masks[1, :, 2 * width // 3 + 8 * t:width - 8 + 8 * t] = True
        instances.gt_masks = BitMasks(masks)
        targets.append(instances)
    return targets


def test_golden_video_training_losses_and_gradients(golden_dir):
    folder = golden_dir(FIXTURE)
    cfg = golden_cfg(folder)
    model = build_model(cfg)
    MaskFormerCheckpointer(model, for_inference=True).load(str(folder / "weights.pth"))
    reference = torch.load(folder / "outputs.pt", weights_only=False)
    train, height, width = reference["train"], reference["height"], reference["width"]
    batch = [{"image": read_frames(folder, cfg), "instances": moving_targets(2, height, width),
              "height": height, "width": width}]
    assert_training_matches_upstream(model, batch, train)


def sliding_clip(folder, cfg, frames: int, height: int = None, width: int = None):
    """The fixture's first frame sliding 6 pixels right per frame, optionally cut to ``height`` x ``width``."""
    first = read_frames(folder, cfg)[0][:, :height, :width]
    return [torch.roll(first, shifts=6 * t, dims=2).contiguous() for t in range(frames)]


# (frames, input size cut, output size asked for)
CLIPS = [(1, (None, None), None), (3, (None, None), (150, 176)), (5, (192, 256), (400, 500))]


@pytest.mark.parametrize("frames,crop,output_size", CLIPS)
def test_fast_inference_keeps_upstream_outputs(golden_dir, frames, crop, output_size):
    """Frame chunks, the top pairs chosen before upsampling and windows at least as long as the video give the
    outputs of upstream's computation (``inference_video_reference``), on other clips than the fixture's."""
    model, cfg = eval_model(golden_dir(FIXTURE))
    video = {"image": sliding_clip(golden_dir(FIXTURE), cfg, frames, *crop)}
    if output_size is not None:
        video["height"], video["width"] = output_size
    with torch.no_grad():
        reference = model.inference_video_reference(video)
        for chunk, window in [(0, 0), (2, frames), (1, frames + 2)]:
            model.frame_chunk_size, model.window_size = chunk, window
            try:
                output = model([video])
            finally:
                model.frame_chunk_size, model.window_size = cfg.MODEL.MASK_FORMER.TEST.FRAME_CHUNK_SIZE, 0
            assert_same_outputs(output, reference)
            mask = output["pred_masks"][0]
            assert mask.shape == (frames, *(output_size or mask.shape[-2:]))


def test_windowed_inference_tracks_objects_across_windows(golden_dir):
    """Windows shorter than the video: every output mask spans the whole video, and an object seen by every
    window (the clip slides slowly) keeps its class and a similar score."""
    model, cfg = eval_model(golden_dir(FIXTURE))
    video = {"image": sliding_clip(golden_dir(FIXTURE), cfg, 4)}
    with torch.no_grad():
        whole = model([video])
        model.window_size = 2
        try:
            windowed = model([video])
        finally:
            model.window_size = 0
    assert len(windowed["pred_masks"]) == 10
    assert all(m.shape == (4, 300, 352) and m.dtype == torch.bool for m in windowed["pred_masks"])
    best = max(range(10), key=lambda i: whole["pred_scores"][i])
    best_windowed = max(range(10), key=lambda i: windowed["pred_scores"][i])
    assert windowed["pred_labels"][best_windowed] == whole["pred_labels"][best]
    assert windowed["pred_scores"][best_windowed] == pytest.approx(whole["pred_scores"][best], abs=0.1)
    agreement = (windowed["pred_masks"][best_windowed] == whole["pred_masks"][best]).float().mean().item()
    assert agreement > 0.9
