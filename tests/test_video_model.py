"""The video model's pieces on tiny random models: config, position encoding, targets, training, the
association of windows, checkpoints of the image model, and bad input."""
import math

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from helpers import tiny_cfg

import mask_former
from mask_former.checkpoint import CheckpointShapeError
from mask_former.modeling.transformer_decoder.video_mask2former_decoder import PositionEmbeddingSine3D
from mask_former.modeling.video import QueryTracks, associate_queries, binary_video_masks, top_pairs


def tiny_video_cfg(num_classes=5, frames=2):
    cfg = tiny_cfg(num_classes=num_classes)
    cfg.MODEL.META_ARCHITECTURE = "VideoMaskFormer"
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "VideoMultiScaleMaskedTransformerDecoder"
    cfg.INPUT.SAMPLING_FRAME_NUM = frames
    return cfg


def clip_input(sizes, ids, classes, seed=0):
    """A training clip: a random frame of each size in ``sizes``, with objects ``ids`` (per frame, -1: absent) of
    ``classes`` (per frame), each a vertical stripe."""
    g = torch.Generator().manual_seed(seed)
    frames, targets = [], []
    for (height, width), frame_ids, frame_classes in zip(sizes, ids, classes):
        frames.append(torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8))
        instances = Instances((height, width))
        instances.gt_ids = torch.tensor(frame_ids)
        instances.gt_classes = torch.tensor(frame_classes)
        masks = torch.zeros(len(frame_ids), height, width, dtype=torch.bool)
        for i, object_id in enumerate(frame_ids):
            if object_id != -1:
                masks[i, :, i * width // len(frame_ids):(i + 1) * width // len(frame_ids)] = True
        instances.gt_masks = BitMasks(masks)
        targets.append(instances)
    return {"image": frames, "instances": targets}


def test_video_config_has_upstream_keys_and_defaults():
    cfg = mask_former.add_maskformer2_video_config(mask_former.add_maskformer2_config(get_cfg()))
    assert cfg.INPUT.SAMPLING_FRAME_NUM == 2
    assert cfg.INPUT.SAMPLING_FRAME_RANGE == 20
    assert cfg.INPUT.SAMPLING_FRAME_SHUFFLE is False
    assert cfg.INPUT.AUGMENTATIONS == []
    assert cfg.MODEL.MASK_FORMER.TEST.WINDOW_SIZE == 0


def test_video_config_needs_the_image_config_first():
    with pytest.raises(ValueError, match="add_maskformer2_config"):
        mask_former.add_maskformer2_video_config(get_cfg())


def upstream_3d_encoding(mask, num_pos_feats, temperature=10000, scale=2 * math.pi):
    """Upstream's PositionEmbeddingSine3D (normalize=True) written out: ``mask [B, T, H, W] -> [B, T, C, H, W]``."""
    not_mask = (~mask).float()
    z, y, x = (not_mask.cumsum(d) for d in (1, 2, 3))
    z = z / (z[:, -1:] + 1e-6) * scale
    y = y / (y[:, :, -1:] + 1e-6) * scale
    x = x / (x[:, :, :, -1:] + 1e-6) * scale

    def encode(embed, feats):
        dim_t = temperature ** (2 * (torch.arange(feats, dtype=torch.float32) // 2) / feats)
        angles = embed[..., None] / dim_t
        return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=5).flatten(4)

    pos = torch.cat((encode(y, num_pos_feats), encode(x, num_pos_feats)), dim=4) + encode(z, 2 * num_pos_feats)
    return pos.permute(0, 1, 4, 2, 3)


def test_3d_position_encoding_is_upstreams():
    layer = PositionEmbeddingSine3D(8, normalize=True)
    clip = torch.zeros(2, 3, 5, 4, 6)
    expected = upstream_3d_encoding(torch.zeros(2, 3, 4, 6, dtype=torch.bool), 8)
    torch.testing.assert_close(layer(clip), expected, rtol=0, atol=1e-6)
    mask = torch.zeros(2, 3, 4, 6, dtype=torch.bool)
    mask[0, 2] = True
    mask[1, :, 3:, 4:] = True
    torch.testing.assert_close(layer(clip, mask), upstream_3d_encoding(mask, 8), rtol=0, atol=1e-6)
    assert not list(layer.state_dict())


def test_targets_follow_upstream():
    """Objects absent from every frame are dropped; labels come from the last frame (upstream's rule); frames
    of different sizes (per-frame crops) are padded."""
    model = build_model(tiny_video_cfg(frames=3)).train()
    video = clip_input(
        sizes=[(48, 64), (40, 64), (48, 56)],
        ids=[[0, -1, 2], [0, -1, -1], [-1, -1, 2]],
        classes=[[1, 2, 3], [1, 2, 3], [4, 2, 0]],
    )
    images = model.preprocess_images([{"image": frame} for frame in video["image"]])
    (target,) = model.prepare_targets([video], images)
    assert target["labels"].tolist() == [4, 0]
    assert target["ids"].tolist() == [[0, 0, -1], [2, -1, 2]]
    assert target["masks"].shape == (2, 3, *images.tensor.shape[-2:])
    assert target["masks"][0, 1, :40].sum() > 0 and target["masks"][0, 1, 40:].sum() == 0
    assert target["masks"][1, 1].sum() == 0


def test_training_step_on_clips_of_cropped_frames():
    torch.manual_seed(0)
    model = build_model(tiny_video_cfg()).train()
    batch = [
        clip_input([(64, 64), (56, 64)], ids=[[0, 1], [0, 1]], classes=[[1, 2], [1, 2]], seed=0),
        clip_input([(64, 48), (64, 48)], ids=[[0, -1], [0, 1]], classes=[[3, 0], [3, 0]], seed=1),
    ]
    losses = model(batch)
    layers = model.sem_seg_head.predictor.num_layers
    assert set(losses) == {f"{name}{suffix}" for name in ("loss_ce", "loss_mask", "loss_dice")
                           for suffix in [""] + [f"_{i}" for i in range(layers)]}
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_associate_queries_finds_the_permutation():
    g = torch.Generator().manual_seed(0)
    previous = torch.randn(7, 16, generator=g)
    permutation = torch.randperm(7, generator=g)
    current = previous[permutation] * 3 + 0.01 * torch.randn(7, 16, generator=g)
    order = associate_queries(previous, current)
    assert torch.equal(current[order], current[permutation.argsort()])
    assert torch.equal(permutation[order], torch.arange(7))


def test_tracks_put_windows_in_the_first_windows_order():
    g = torch.Generator().manual_seed(0)
    queries, classes = 6, 4
    logits = [torch.randn(queries, classes + 1, generator=g) for _ in range(2)]
    masks = [torch.randn(queries, 2, 3, 5, generator=g) for _ in range(2)]
    embeds = torch.randn(queries, 8, generator=g)
    permutation = torch.randperm(queries, generator=g)
    tracks = QueryTracks()
    tracks.add(logits[0], masks[0], embeds)
    tracks.add(logits[1][permutation], masks[1][permutation], embeds[permutation])
    scores = (logits[0].softmax(-1)[:, :-1] + logits[1].softmax(-1)[:, :-1]) / 2
    torch.testing.assert_close(tracks.scores(), scores)
    chosen = torch.tensor([4, 1])
    assert torch.equal(tracks.masks(chosen), torch.cat([masks[0][chosen], masks[1][chosen]], dim=1))


def test_one_window_tracks_are_the_window_outputs():
    logits, masks, embeds = torch.randn(5, 3), torch.randn(5, 2, 4, 4), torch.randn(5, 8)
    tracks = QueryTracks()
    tracks.add(logits, masks, embeds)
    assert torch.equal(tracks.scores(), logits.softmax(-1)[:, :-1])
    assert torch.equal(tracks.masks(torch.tensor([3, 3, 0])), masks[[3, 3, 0]])


def test_top_pairs_is_upstreams_rule():
    scores = torch.rand(7, 4, generator=torch.Generator().manual_seed(0))
    top, labels, queries = top_pairs(scores, 10)
    expected, index = scores.flatten().topk(10, sorted=False)
    assert torch.equal(top, expected)
    assert torch.equal(labels, torch.arange(4).repeat(7)[index])
    assert torch.equal(queries, index // 4)
    assert len(top_pairs(scores[:2], 10)[0]) == 8


@pytest.mark.parametrize("image_size,output_size", [((50, 60), (50, 60)), ((50, 60), (71, 33))])
def test_binary_masks_in_frame_chunks_equal_all_at_once(image_size, output_size):
    logits = torch.randn(3, 5, 16, 16, generator=torch.Generator().manual_seed(0))
    whole = binary_video_masks(logits, (64, 64), image_size, output_size)
    assert whole.shape == (3, 5, *output_size) and whole.dtype == torch.bool
    for chunk in (1, 2, 5, 7):
        assert torch.equal(binary_video_masks(logits, (64, 64), image_size, output_size, frame_chunk=chunk), whole)


def test_image_checkpoint_initializes_the_video_model_but_its_class_head(tmp_path):
    """Upstream's recipe: a COCO instance-segmentation checkpoint of the image model initializes the video model;
    only the class head (and the criterion's class weights) depend on the number of classes."""
    image_model = build_model(tiny_cfg(num_classes=80))
    path = tmp_path / "coco_instance.pth"
    torch.save({"model": image_model.state_dict()}, path)
    video_model = build_model(tiny_video_cfg(num_classes=40))
    checkpointer = DetectionCheckpointer(video_model)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(path)))
    assert {key for key, _, _ in incompatible.incorrect_shapes} == set(video_model.checkpoint_shape_mismatch_allowed)
    assert set(incompatible.missing_keys) == set(video_model.checkpoint_shape_mismatch_allowed)
    assert not incompatible.unexpected_keys
    loaded, source = video_model.state_dict(), image_model.state_dict()
    for key, value in loaded.items():
        if key not in video_model.checkpoint_shape_mismatch_allowed:
            assert torch.equal(value, source[key]), key


def test_other_shape_mismatches_are_still_errors(tmp_path):
    cfg = tiny_video_cfg()
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 9
    path = tmp_path / "other.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    with pytest.raises(CheckpointShapeError, match="query_feat"):
        DetectionCheckpointer(build_model(tiny_video_cfg())).load(str(path))


@pytest.fixture(scope="module")
def eval_model():
    torch.manual_seed(0)
    return build_model(tiny_video_cfg()).eval()


def test_inference_takes_one_video(eval_model):
    video = {"image": [torch.zeros(3, 32, 32, dtype=torch.uint8)] * 2}
    with pytest.raises(ValueError, match="one video at a time"):
        eval_model([video, video])


def test_inference_frames_must_share_a_size(eval_model):
    video = {"image": [torch.zeros(3, 32, 32, dtype=torch.uint8), torch.zeros(3, 32, 40, dtype=torch.uint8)]}
    with pytest.raises(ValueError, match="share one size"):
        eval_model([video])


def test_training_clip_length_is_checked():
    model = build_model(tiny_video_cfg(frames=3)).train()
    clip = clip_input([(32, 32)] * 2, ids=[[0], [0]], classes=[[1], [1]])
    with pytest.raises(ValueError, match="SAMPLING_FRAME_NUM=3"):
        model([clip])


def test_negative_window_is_a_config_error():
    cfg = tiny_video_cfg()
    cfg.MODEL.MASK_FORMER.TEST.WINDOW_SIZE = -1
    with pytest.raises(ValueError, match="WINDOW_SIZE"):
        build_model(cfg)
