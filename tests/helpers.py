"""Shared test helpers: configs for tiny models, running the golden fixtures."""
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.projects.deeplab import add_deeplab_config
from PIL import Image

import mask_former
from mask_former.assembly import pixel_categories
from mask_former.engine.optimizer import build_optimizer


def base_cfg():
    cfg = get_cfg()
    add_deeplab_config(cfg)
    mask_former.add_maskformer2_config(cfg)
    mask_former.add_maskformer2_video_config(cfg)
    return cfg


def golden_cfg(folder):
    cfg = base_cfg()
    cfg.merge_from_file(str(folder / "config.yaml"))
    return cfg


def run_fixture(folder, opts=()):
    """``(incompatible keys, output, reference)``: the golden fixture's model (config overridden by ``opts``,
    ``["KEY", "VALUE", ...]``) with upstream's weights loaded by detectron2's own, plain ``DetectionCheckpointer``
    (the modules' state-dict upgrades alone make every key fit), run in eval mode on its image as upstream was.
    The incompatible keys are those of ``load_state_dict`` on the same file, which is what the checkpointer calls."""
    cfg = golden_cfg(folder)
    cfg.merge_from_list(list(opts))
    model = build_model(cfg).eval()
    weights = str(folder / "weights.pth")
    DetectionCheckpointer(model).load(weights)
    incompatible = model.load_state_dict(torch.load(weights, weights_only=True)["model"], strict=False)
    image = np.array(Image.open(folder / "input.png").convert(cfg.INPUT.FORMAT))
    reference = torch.load(folder / "outputs.pt", weights_only=False)
    with torch.no_grad():
        output = model([{"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(),
                         "height": reference["height"], "width": reference["width"]}])[0]
    return incompatible, output, reference


def tiny_cfg(pixel_decoder="MSDeformAttnPixelDecoder", transformer_decoder="MultiScaleMaskedTransformerDecoder",
             in_feature="multi_scale_pixel_decoder", num_classes=5):
    """A Swin model small enough to train a step on CPU in a second."""
    cfg = base_cfg()
    cfg.MODEL.META_ARCHITECTURE = "MaskFormer"
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "D2SwinTransformer"
    cfg.MODEL.SWIN.EMBED_DIM = 32
    cfg.MODEL.SWIN.DEPTHS = [1, 1, 1, 1]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 4, 8]
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    head = cfg.MODEL.SEM_SEG_HEAD
    head.NAME = "MaskFormerHead"
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.NUM_CLASSES = num_classes
    head.CONVS_DIM = 32
    head.MASK_DIM = 32
    head.NORM = "GN"
    head.PIXEL_DECODER_NAME = pixel_decoder
    head.TRANSFORMER_ENC_LAYERS = 1
    head.COMMON_STRIDE = 4
    mf = cfg.MODEL.MASK_FORMER
    mf.TRANSFORMER_DECODER_NAME = transformer_decoder
    mf.TRANSFORMER_IN_FEATURE = in_feature
    mf.HIDDEN_DIM = 32
    mf.NHEADS = 4
    mf.DIM_FEEDFORWARD = 64
    mf.DEC_LAYERS = 3
    mf.NUM_OBJECT_QUERIES = 6
    mf.TRAIN_NUM_POINTS = 64
    mf.DROPOUT = 0.0
    mf.TEST.SEMANTIC_ON = True
    mf.TEST.PANOPTIC_ON = True
    mf.TEST.INSTANCE_ON = True
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.DATASETS.TRAIN = ("coco_2017_train_panoptic",)
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
    return cfg


def cpu_sized_cfg(path):
    """An upstream model-zoo config with the same components (meta-architecture, backbone type and
    depth, pixel decoder, transformer decoder, head, recipe, classes, queries, decoder layers) but
    narrow enough to train a step on a 64 x 64 image on the CPU in about a second."""
    cfg = base_cfg()
    cfg.merge_from_file(str(path))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    resnets = cfg.MODEL.RESNETS
    if resnets.DEPTH >= 50:  # R18 / R34 need 64 channels at res2 and are small already
        resnets.STEM_OUT_CHANNELS, resnets.RES2_OUT_CHANNELS, resnets.WIDTH_PER_GROUP = 8, 16, 4
    swin = cfg.MODEL.SWIN
    swin.EMBED_DIM, swin.NUM_HEADS, swin.DEPTHS = 16, [1, 2, 4, 8], [min(d, 2) for d in swin.DEPTHS]
    head = cfg.MODEL.SEM_SEG_HEAD
    head.CONVS_DIM = head.MASK_DIM = 32
    mf = cfg.MODEL.MASK_FORMER
    mf.HIDDEN_DIM, mf.DIM_FEEDFORWARD, mf.TRAIN_NUM_POINTS = 32, 64, 256
    return cfg


def assert_training_matches_upstream(model, batch, train):
    """One training call of ``model`` on ``batch`` right after ``torch.manual_seed(train["seed"])`` returns the
    losses of ``train["losses"]`` and, after the backward, the gradient norms of ``train["grad_norms"]``, each
    within 1e-3 relative (a golden fixture's ``train`` record, see ../shared/golden/README.md)."""
    model.train()
    torch.manual_seed(train["seed"])
    losses = model(batch)
    assert set(losses) == set(train["losses"])
    for key, expected in train["losses"].items():
        assert losses[key].item() == pytest.approx(expected, rel=1e-3), key
    sum(losses.values()).backward()
    for module_name, expected in train["grad_norms"].items():
        grads = [p.grad.flatten() for p in getattr(model, module_name).parameters() if p.grad is not None]
        assert torch.cat(grads).norm().item() == pytest.approx(expected, rel=1e-3), module_name


def assert_one_step_trains(cfg, model, losses):
    """The losses are finite, and one optimizer step (the config's optimizer) on their sum changes the trainable
    parameters and leaves them finite."""
    assert all(torch.isfinite(v) for v in losses.values()), losses
    optimizer = build_optimizer(cfg, model)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    sum(losses.values()).backward()
    optimizer.step()
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(b, a) for b, a in zip(before, after))
    assert all(torch.isfinite(a).all() for a in after)


def assert_agrees_with_upstream(result, reference):
    """A reduced-precision result (bfloat16 model, int8 export) against a golden fixture's float32 ``reference``:
    the semantic argmax on at least 99% of the pixels and, where the fixture has one, the panoptic category on at
    least 98%. ``result`` holds ``sem_seg`` and ``panoptic_seg`` as the model or the exported runtime returns them."""
    argmax = np.asarray(result["sem_seg"]).argmax(0)
    assert (argmax == reference["sem_seg_argmax"].numpy()).mean() >= 0.99
    if "panoptic_seg" in reference:
        ours = pixel_categories(*result["panoptic_seg"])
        assert (ours == pixel_categories(reference["panoptic_seg"], reference["segments_info"])).mean() >= 0.98
