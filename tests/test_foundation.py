"""The installed environment: config keys, registries, import order, detectron2 without its C++ ops."""
import importlib.util
import logging
import subprocess
import sys

import pytest
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, SEM_SEG_HEADS_REGISTRY

from helpers import base_cfg
from mask_former.modeling import PIXEL_DECODER_REGISTRY, TRANSFORMER_DECODER_REGISTRY

HAS_D2_C = importlib.util.find_spec("detectron2._C") is not None


def test_config_function_adds_upstream_keys_with_upstream_defaults():
    cfg = base_cfg()
    mf = cfg.MODEL.MASK_FORMER
    assert (mf.NUM_OBJECT_QUERIES, mf.HIDDEN_DIM, mf.DEC_LAYERS, mf.TRAIN_NUM_POINTS) == (100, 256, 6, 112 * 112)
    assert mf.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder"
    assert (mf.TEST.SEMANTIC_ON, mf.TEST.PANOPTIC_ON, mf.TEST.INSTANCE_ON) == (True, False, False)
    assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME == "BasePixelDecoder"
    assert cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES == ["res3", "res4", "res5"]
    assert cfg.MODEL.SWIN.DEPTHS == [2, 2, 6, 2]
    assert cfg.INPUT.DATASET_MAPPER_NAME == "mask_former_semantic"
    assert (cfg.INPUT.IMAGE_SIZE, cfg.INPUT.MIN_SCALE, cfg.INPUT.MAX_SCALE) == (1024, 0.1, 2.0)
    assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BACKBONE_MULTIPLIER, cfg.SOLVER.WEIGHT_DECAY_EMBED) == ("ADAMW", 0.1, 0.0)


def test_registries_hold_our_components():
    assert "MaskFormer" in META_ARCH_REGISTRY
    assert "MaskFormerHead" in SEM_SEG_HEADS_REGISTRY
    assert "D2SwinTransformer" in BACKBONE_REGISTRY
    for name in ("BasePixelDecoder", "TransformerEncoderPixelDecoder", "MSDeformAttnPixelDecoder"):
        assert name in PIXEL_DECODER_REGISTRY
    for name in ("StandardTransformerDecoder", "MultiScaleMaskedTransformerDecoder"):
        assert name in TRANSFORMER_DECODER_REGISTRY


@pytest.mark.parametrize(
    "order",
    [
        "import mask_former, detectron2.evaluation",
        "import detectron2.evaluation, mask_former",
        "import detectron2.data, detectron2.evaluation, detectron2.engine, mask_former",
        "import mask_former, detectron2.engine, detectron2.data, detectron2.evaluation",
    ],
)
def test_imports_work_in_either_order_in_a_fresh_process(order):
    result = subprocess.run([sys.executable, "-c", order], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(HAS_D2_C, reason="detectron2 was built with its C++ ops")
def test_missing_cpp_op_raises_a_clear_error_when_used():
    import torch
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[5.0, 5.0, 4.0, 4.0, 0.0]])
    with pytest.raises(RuntimeError, match="box_iou_rotated is unavailable.*without its C\\+\\+/CUDA extension"):
        pairwise_iou_rotated(boxes, boxes)


@pytest.mark.skipif(HAS_D2_C, reason="detectron2 was built with its C++ ops")
def test_coco_evaluation_falls_back_to_pycocotools(tmp_path, caplog):
    import json

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.evaluation import COCOEvaluator

    annotations = {
        "images": [{"id": 1, "width": 4, "height": 4, "file_name": "a.png"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0,
                         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    json_file = tmp_path / "instances.json"
    json_file.write_text(json.dumps(annotations))
    name = "test_foundation_coco_fallback"
    DatasetCatalog.register(name, lambda: [])
    MetadataCatalog.get(name).set(json_file=str(json_file), thing_classes=["thing"])
    with caplog.at_level(logging.INFO):
        evaluator = COCOEvaluator(name, tasks=("segm",), distributed=False, output_dir=str(tmp_path))
    assert evaluator._use_fast_impl is False
    assert any("pycocotools" in r.getMessage() for r in caplog.records)
