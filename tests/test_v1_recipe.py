"""MaskFormer (v1) configs get v1's criterion, matcher and panoptic merge; Mask2Former's keep theirs."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import Instances

from helpers import tiny_cfg
from mask_former.modeling.criterion import FullMaskSetCriterion, SetCriterion
from mask_former.modeling.matcher import FullMaskHungarianMatcher, HungarianMatcher
from mask_former.modeling.postprocessing import panoptic_inference


def v1_cfg():
    """A v1 config: no TRANSFORMER_DECODER_NAME of its own, the decoder fed "res5"."""
    cfg = tiny_cfg("BasePixelDecoder", "MultiScaleMaskedTransformerDecoder", "res5")
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    return cfg


@pytest.mark.parametrize("recipe_key,expected", [("", "maskformer"), ("mask2former", "mask2former")])
def test_v1_config_criterion_follows_the_recipe(recipe_key, expected):
    cfg = v1_cfg()
    cfg.MODEL.MASK_FORMER.RECIPE = recipe_key
    model = build_model(cfg)
    assert model.recipe.name == expected
    v1 = expected == "maskformer"
    assert isinstance(model.criterion, FullMaskSetCriterion) == v1
    assert isinstance(model.criterion.matcher, FullMaskHungarianMatcher) == v1


def test_mask2former_config_keeps_the_point_sampled_criterion():
    model = build_model(tiny_cfg())
    assert model.recipe.name == "mask2former"
    assert type(model.criterion) is SetCriterion and type(model.criterion.matcher) is HungarianMatcher
    assert model.criterion.num_points == 64


def test_v1_recipe_trains_with_v1_loss_names_and_values():
    cfg = v1_cfg()
    cfg.MODEL.MASK_FORMER.RECIPE = "maskformer"
    model = build_model(cfg).train()
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    instances = Instances((64, 64))
    instances.gt_classes = torch.tensor([1, 3])
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :, :32] = True
    masks[1, :, 32:] = True
    instances.gt_masks = masks
    losses = model([{"image": image, "instances": instances}])
    assert set(losses) == {f"{k}{s}" for k in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1")}
    assert all(torch.isfinite(v) for v in losses.values())


def _two_queries():
    """Query 0 wins every pixel of the left half, but with mask probability 0.4 there."""
    mask_cls = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    mask_prob = torch.zeros(2, 4, 8)
    mask_prob[0, :, :4] = 0.4
    mask_prob[0, 0, 0] = 0.9  # one confident pixel, so that query 0 has an area
    mask_prob[1, :, 4:] = 0.8
    return mask_cls, mask_prob


@pytest.mark.parametrize("require_mask_confidence,left_half_segment", [(True, 0), (False, 1)])
def test_panoptic_merge_rule(require_mask_confidence, left_half_segment):
    mask_cls, mask_prob = _two_queries()
    seg, info = panoptic_inference(
        mask_cls, mask_prob, num_classes=2, thing_classes={0, 1}, object_mask_threshold=0.0,
        overlap_threshold=0.0, require_mask_confidence=require_mask_confidence,
    )
    assert [s["category_id"] for s in info] == [0, 1]
    assert seg[0, 0].item() == 1
    assert (seg[1:, :4] == left_half_segment).all()
    assert (seg[:, 4:] == 2).all()


def test_v1_model_merges_panoptic_by_argmax_alone(monkeypatch):
    import mask_former.modeling.meta_arch.maskformer as meta

    calls = []

    def record(*args, tasks, **kwargs):
        calls.append(tasks.require_mask_confidence)
        return {}

    # Both inference paths (row bands in eager inference, the reference otherwise) read the rule from the tasks.
    monkeypatch.setattr(meta, "row_band_inference", record)
    for recipe in ("maskformer", "mask2former"):
        cfg = v1_cfg()
        cfg.MODEL.MASK_FORMER.RECIPE = recipe
        model = build_model(cfg).eval()
        with torch.no_grad():
            model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])
    assert calls == [False, True]


@pytest.mark.parametrize("before", [False, True])
def test_v1_semantic_postprocessing_order_is_upstreams(before):
    """v1: resize the mask logits to the output size before the semantic inference when
    SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE (or PANOPTIC_ON), else resize the semantic scores."""
    cfg = v1_cfg()
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = before
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 60, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        [result] = model([{"image": image, "height": 90, "width": 100}])
        images = model.preprocess_images([{"image": image}])
        outputs = model.sem_seg_head(model.backbone(images.tensor))
    mask_cls = outputs["pred_logits"][0].softmax(-1)[:, :-1]
    size = images.tensor.shape[-2:]
    mask_pred = F.interpolate(outputs["pred_masks"], size=size, mode="bilinear", align_corners=False)[0]
    if before:
        expected = torch.einsum("qc,qhw->chw", mask_cls, sem_seg_postprocess(mask_pred, (60, 70), 90, 100).sigmoid())
    else:
        expected = sem_seg_postprocess(torch.einsum("qc,qhw->chw", mask_cls, mask_pred.sigmoid()), (60, 70), 90, 100)
    torch.testing.assert_close(result["sem_seg"], expected, atol=1e-5, rtol=1e-5)
