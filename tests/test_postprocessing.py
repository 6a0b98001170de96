"""Post-processing and the eval-time shortcuts against plain references."""
import torch
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import sem_seg_postprocess
from torch.nn import functional as F

from helpers import tiny_cfg
from mask_former.assembly import assemble_instances
from mask_former.modeling.meta_arch.maskformer import resize_to_output
from mask_former.modeling.postprocessing import (
    instance_inference,
    instance_tensors,
    panoptic_inference,
    semantic_inference,
)


def reference_instance_inference(mask_cls, mask_pred, num_classes, topk):
    """Every (query, class) pair's mask taken and scored on its own, as upstream does."""
    scores = F.softmax(mask_cls, dim=-1)[:, :-1]
    labels = torch.arange(num_classes).unsqueeze(0).repeat(mask_cls.shape[0], 1).flatten(0, 1)
    top_scores, top = scores.flatten(0, 1).topk(topk, sorted=False)
    masks = mask_pred[top // num_classes]
    binary = (masks > 0).float()
    mask_scores = (masks.sigmoid().flatten(1) * binary.flatten(1)).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    return binary, top_scores * mask_scores, labels[top]


def test_instance_inference_matches_reference():
    torch.manual_seed(0)
    mask_cls, mask_pred = torch.randn(7, 5) * 3, torch.randn(7, 20, 24) * 2
    result = instance_inference(mask_cls, mask_pred > 0, mask_pred.sigmoid(), num_classes=4, topk=12)
    masks, scores, classes = reference_instance_inference(mask_cls, mask_pred, 4, 12)
    assert torch.equal(result.pred_masks, masks)
    torch.testing.assert_close(result.scores, scores)
    assert torch.equal(result.pred_classes, classes)


def test_instance_inference_keeps_only_things_for_panoptic_models():
    torch.manual_seed(1)
    mask_cls, mask_pred = torch.randn(6, 4), torch.randn(6, 8, 8)
    result = instance_inference(mask_cls, mask_pred > 0, mask_pred.sigmoid(), num_classes=3, topk=18, thing_classes={1})
    assert len(result) == 6 and set(result.pred_classes.tolist()) == {1}


def test_semantic_inference_sums_class_times_mask_probability():
    mask_cls = torch.tensor([[5.0, -5.0, -5.0], [-5.0, 5.0, -5.0]])
    mask_prob = torch.stack([torch.ones(2, 2), torch.zeros(2, 2)])
    sem_seg = semantic_inference(mask_cls, mask_prob)
    assert sem_seg.shape == (2, 2, 2)
    assert (sem_seg[0] > 0.99).all() and (sem_seg[1] < 0.01).all()


def test_panoptic_inference_merges_stuff_and_drops_overlapped_segments():
    big = 10.0
    mask_cls = torch.full((4, 4), -big)
    mask_cls[0, 0] = mask_cls[1, 2] = mask_cls[2, 2] = mask_cls[3, 1] = big  # thing 0, stuff 2 twice, thing 1
    logits = torch.full((4, 4, 6), -big)
    logits[0, :2, 1:] = big
    logits[1, 2:3] = big
    logits[2, 3:] = big
    logits[3, :, :1] = big  # column 0: on rows 2-3 queries 1 and 2 win the score ties, rows 0-1 stay its own

    def infer(overlap_threshold):
        return panoptic_inference(mask_cls, logits.sigmoid(), num_classes=3, thing_classes={0, 1},
                                  object_mask_threshold=0.5, overlap_threshold=overlap_threshold)

    seg, info = infer(overlap_threshold=0.8)  # query 3 keeps 2 of its 4 pixels: 0.5 < 0.8
    categories = sorted((s["category_id"], s["isthing"]) for s in info)
    assert categories == [(0, True), (2, False)]
    stuff_id = next(s["id"] for s in info if s["category_id"] == 2)
    assert (seg[2:] == stuff_id).all()
    assert (seg[:2, 1:] == next(s["id"] for s in info if s["category_id"] == 0)).all()
    assert (seg[:2, 0] == 0).all()  # the dropped segment's pixels are void

    seg, info = infer(overlap_threshold=0.5)
    thing_1 = [s["id"] for s in info if s["category_id"] == 1]
    assert len(thing_1) == 1 and (seg[:2, 0] == thing_1[0]).all()


def test_panoptic_inference_with_no_confident_query_is_empty():
    seg, info = panoptic_inference(torch.zeros(3, 4), torch.rand(3, 5, 5), num_classes=3, thing_classes=set(),
                                   object_mask_threshold=0.9, overlap_threshold=0.8)
    assert info == [] and (seg == 0).all()


def test_resize_to_output_matches_sem_seg_postprocess():
    x = torch.randn(3, 32, 40)
    for image_size, out in [((30, 37), (30, 37)), ((30, 37), (60, 74)), ((32, 40), (16, 20))]:
        assert torch.equal(resize_to_output(x, image_size, *out), sem_seg_postprocess(x, image_size, *out))


def test_eval_decoder_shortcut_matches_the_full_predictions():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    head = model.sem_seg_head
    features = model.backbone(torch.randn(1, 3, 64, 96))
    mask_features, _, multi_scale = head.pixel_decoder.forward_features(features)
    decoder = head.predictor
    with torch.no_grad():
        decoder.train()
        full = decoder(multi_scale, mask_features)
        decoder.eval()
        fast = decoder(multi_scale, mask_features)
    assert fast["aux_outputs"] == [] and len(full["aux_outputs"]) == 2
    torch.testing.assert_close(fast["pred_logits"], full["pred_logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast["pred_masks"], full["pred_masks"], atol=1e-5, rtol=1e-5)


def test_instance_inference_matches_instance_tensors():
    """Eager instance inference scores only the top pairs' queries; the exported tensor stage scores
    every query: both give the same instances through the shared numpy assembly."""
    torch.manual_seed(4)
    mask_cls, mask_pred = torch.randn(9, 6) * 3, torch.randn(9, 12, 10) * 2
    for things in (None, {0, 3}):
        stage = instance_tensors(mask_cls, mask_pred, mask_pred.sigmoid())
        top = stage["pair_scores"].topk(20, sorted=False).indices
        scores, classes, pair_query = assemble_instances(
            stage["pair_scores"].numpy(), stage["mask_scores"].numpy(), top.numpy(), num_classes=5, thing_classes=things
        )
        result = instance_inference(
            mask_cls, mask_pred > 0, mask_pred.sigmoid(), num_classes=5, topk=20, thing_classes=things
        )
        assert torch.equal(result.pred_masks, stage["query_masks"][torch.from_numpy(pair_query)].float())
        torch.testing.assert_close(result.scores, torch.from_numpy(scores))
        assert torch.equal(result.pred_classes, torch.from_numpy(classes))
