"""The MaskFormer meta-architecture on tiny models: training steps, inference outputs, batching, bad input."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Instances

from helpers import base_cfg, tiny_cfg

DECODER_PAIRS = [
    ("BasePixelDecoder", "StandardTransformerDecoder", "res5"),
    ("TransformerEncoderPixelDecoder", "StandardTransformerDecoder", "transformer_encoder"),
    ("BasePixelDecoder", "StandardTransformerDecoder", "pixel_embedding"),
    ("MSDeformAttnPixelDecoder", "MultiScaleMaskedTransformerDecoder", "multi_scale_pixel_decoder"),
    ("BasePixelDecoder", "MultiScaleMaskedTransformerDecoder", "multi_scale_pixel_decoder"),
]


def training_input(height, width, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (3, height, width), generator=g, dtype=torch.uint8)
    instances = Instances((height, width))
    masks = torch.zeros(3, height, width, dtype=torch.bool)
    masks[0, : height // 2] = True
    masks[1, height // 2 :, : width // 2] = True
    masks[2, height // 2 :, width // 2 :] = True
    instances.gt_masks = masks
    instances.gt_classes = torch.tensor([0, 2, num_classes - 1])
    return {"image": image, "instances": instances}


@pytest.mark.parametrize("pixel_decoder,transformer_decoder,in_feature", DECODER_PAIRS)
def test_training_step_reaches_every_parameter(pixel_decoder, transformer_decoder, in_feature):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(pixel_decoder, transformer_decoder, in_feature))
    model.train()
    losses = model([training_input(64, 96), training_input(80, 64, seed=1)])
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_dice_1"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    untouched = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not untouched
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.fixture(scope="module")
def eval_model():
    torch.manual_seed(0)
    return build_model(tiny_cfg()).eval()


@pytest.mark.parametrize(
    "size,output_size", [((37, 53), (74, 106)), ((1, 1), (1, 1)), ((8, 600), (8, 600)), ((96, 64), (96, 64))]
)
def test_inference_outputs_on_odd_sizes(eval_model, size, output_size):
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8)
    with torch.no_grad():
        (result,) = eval_model([{"image": image, "height": output_size[0], "width": output_size[1]}])
    assert result["sem_seg"].shape == (5, *output_size)
    panoptic_seg, segments_info = result["panoptic_seg"]
    assert panoptic_seg.shape == output_size and panoptic_seg.dtype == torch.int32
    assert set(panoptic_seg.unique().tolist()) <= {0} | {s["id"] for s in segments_info}
    instances = result["instances"]
    assert instances.image_size == output_size
    assert instances.pred_masks.shape[1:] == output_size
    assert len(instances) <= 10 and (instances.scores >= 0).all() and (instances.scores <= 1).all()
    assert set(instances.pred_classes.tolist()) <= set(range(80))  # thing classes of COCO panoptic


def test_batch_of_different_sizes_equals_one_at_a_time(eval_model):
    inputs = [
        {"image": torch.randint(0, 256, (3, 40, 70), dtype=torch.uint8), "height": 40, "width": 70},
        {"image": torch.randint(0, 256, (3, 100, 64), dtype=torch.uint8), "height": 50, "width": 32},
    ]
    with torch.no_grad():
        batched = eval_model(inputs)
        single = [eval_model([x])[0] for x in inputs]
    for b, s in zip(batched, single):
        torch.testing.assert_close(b["sem_seg"], s["sem_seg"])
        assert torch.equal(b["panoptic_seg"][0], s["panoptic_seg"][0])
        torch.testing.assert_close(b["instances"].scores, s["instances"].scores)


def test_semantic_only_model_has_no_other_outputs():
    cfg = tiny_cfg()
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    model = build_model(cfg).eval()
    with torch.no_grad():
        (result,) = model([{"image": torch.zeros(3, 32, 32, dtype=torch.uint8)}])
    assert set(result) == {"sem_seg"}


def test_unknown_config_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("MODEL:\n  MASK_FORMER:\n    NUM_QUERIES_TYPO: 3\n")
    with pytest.raises(KeyError, match="MODEL.MASK_FORMER.NUM_QUERIES_TYPO"):
        base_cfg().merge_from_file(str(path))


def test_image_with_wrong_channels_is_an_error(eval_model):
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        eval_model([{"image": torch.zeros(4, 32, 32, dtype=torch.uint8)}])


def test_old_checkpoint_names_are_converted():
    model = build_model(tiny_cfg())
    state = dict(model.state_dict())
    query_feat = torch.randn_like(state["sem_seg_head.predictor.query_feat.weight"])
    del state["sem_seg_head.predictor.query_feat.weight"]
    state["sem_seg_head.predictor.static_query.weight"] = query_feat
    incompatible = model.load_state_dict(state, strict=False)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert torch.equal(model.sem_seg_head.predictor.query_feat.weight, query_feat)


def resnet_cfg(channels_last, fold_frozen_bn):
    cfg = tiny_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.MASK_FORMER.CHANNELS_LAST = channels_last
    cfg.MODEL.MASK_FORMER.FOLD_FROZEN_BN = fold_frozen_bn
    return cfg


def _randomize_frozen_bn(model):
    """Away from the identity map that a fresh FrozenBatchNorm2d is, so that folding it is tested."""
    g = torch.Generator().manual_seed(5)
    for name, buffer in model.backbone.named_buffers():
        if name.endswith(("norm.weight", "norm.bias", "norm.running_mean")):
            buffer.copy_(torch.randn(buffer.shape, generator=g) * 0.2 + name.endswith("norm.weight"))
        elif name.endswith("norm.running_var"):
            buffer.copy_(torch.rand(buffer.shape, generator=g) + 0.5)


@pytest.mark.parametrize("channels_last,fold_frozen_bn", [(True, False), (False, True), (True, True)])
def test_fast_backbone_options_match_the_plain_backbone(channels_last, fold_frozen_bn):
    from mask_former.modeling.fast_paths.frozen_bn import FrozenBNConv2d

    models = []
    for options in ((False, False), (channels_last, fold_frozen_bn)):
        torch.manual_seed(0)
        models.append(build_model(resnet_cfg(*options)))
        _randomize_frozen_bn(models[-1])
    reference, fast = models
    assert fast.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert (type(fast.backbone.stem.conv1) is FrozenBNConv2d) == fold_frozen_bn
    assert list(fast.state_dict()) == list(reference.state_dict())
    assert [name for name, _ in fast.named_parameters()] == [name for name, _ in reference.named_parameters()]
    batch = [training_input(64, 96), training_input(64, 96, seed=1)]
    for model in models:
        model.train()
    torch.manual_seed(1)
    expected = reference(batch)
    torch.manual_seed(1)
    losses = fast(batch)
    for name, value in expected.items():
        torch.testing.assert_close(losses[name], value, rtol=1e-4, atol=1e-5, msg=name)
    sum(expected.values()).backward()
    sum(losses.values()).backward()
    for name in ("backbone.stem.conv1.weight", "backbone.res4.0.conv2.weight", "backbone.res5.1.conv1.weight"):
        grads = [dict(model.named_parameters())[name].grad for model in models]
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5, msg=name)
    for model in models:
        model.eval()
    image = [{"image": training_input(64, 96)["image"]}]
    with torch.no_grad():
        (expected,), (result,) = reference(image), fast(image)
    torch.testing.assert_close(result["sem_seg"], expected["sem_seg"], rtol=1e-4, atol=1e-5)


def test_joined_mask_logit_backward_gives_the_einsum_gradients():
    """The Mask2Former decoder joins every layer's mask logits to the graph at once on the CPU; with the plain
    einsum per layer the losses and every gradient are the same."""
    from mask_former.modeling.transformer_decoder import mask2former_decoder as decoder_module

    cfg = tiny_cfg()
    results = []
    for joins in (True, False):
        torch.manual_seed(0)
        model = build_model(cfg).train()
        batch = [training_input(64, 96), training_input(64, 96, seed=1)]
        with pytest.MonkeyPatch.context() as patch:
            if not joins:
                patch.setattr(decoder_module, "joins_mask_logits", lambda features: False)
            torch.manual_seed(1)
            losses = model(batch)
        sum(losses.values()).backward()
        results.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (joined_losses, joined_grads), (plain_losses, plain_grads) = results
    for name, value in plain_losses.items():
        torch.testing.assert_close(joined_losses[name], value, rtol=1e-6, atol=1e-7, msg=name)
    assert joined_grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(joined_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
