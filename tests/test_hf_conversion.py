"""tools/convert_hf_mask2former.py and mask_former.checkpoint.huggingface: a tiny random Hugging Face
Mask2Former (Swin) converted to ours gives Hugging Face's outputs, and back to Hugging Face gives them
again; what the conversion cannot represent is a clear error."""
import json
import os

import pytest
import torch
import yaml
from detectron2.modeling import build_model

from helpers import tiny_cfg
from mask_former.checkpoint.huggingface import (
    HuggingFaceConversionError,
    hf_config_to_ours,
    hf_state_dict_to_ours,
    ours_config_to_hf,
)
from mask_former.config import build_config
from mask_former.data.datasets.custom import load_dataset_description
from test_tools import load_tool

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported: nothing is downloaded
transformers = pytest.importorskip("transformers")

CLASSES = ["sky", "grass", "circle", "square"]
IMAGE_MEAN, IMAGE_STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
# Not square, and not a multiple of the patch, window or 32: exercises every padding.
HEIGHT, WIDTH = 70, 90


def tiny_hf_config(hidden_dim=32):
    swin = transformers.SwinConfig(
        embed_dim=16, depths=[2, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=4, image_size=64,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    return transformers.Mask2FormerConfig(
        backbone_config=swin, feature_size=32, mask_feature_size=32, hidden_dim=hidden_dim, dim_feedforward=64,
        encoder_layers=1, decoder_layers=3, num_attention_heads=4, num_queries=5,
        id2label=dict(enumerate(CLASSES)), use_pretrained_backbone=False,
    )


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random Hugging Face model saved by ``save_pretrained``, with an image processor config."""
    torch.manual_seed(0)
    model = transformers.Mask2FormerForUniversalSegmentation(tiny_hf_config()).eval()
    folder = tmp_path_factory.mktemp("hf")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": IMAGE_MEAN, "image_std": IMAGE_STD}))
    return folder


@pytest.fixture(scope="module")
def hf_model(hf_dir):
    return transformers.Mask2FormerForUniversalSegmentation.from_pretrained(hf_dir).eval()


@pytest.fixture(scope="module")
def converted(hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ours")
    assert load_tool("convert_hf_mask2former.py").main([str(hf_dir), str(out), "--task", "panoptic"]) == 0
    return out


@pytest.fixture(scope="module")
def our_model(converted):
    cfg = build_config(str(converted / "config.yaml"), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(cfg.MODEL.WEIGHTS, weights_only=True)["model"])
    return model


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1))


def test_converted_config_and_classes(converted, tmp_path):
    cfg = build_config(str(converted / "config.yaml"))
    assert cfg.MODEL.BACKBONE.NAME == "D2SwinTransformer"
    assert (cfg.MODEL.SWIN.EMBED_DIM, list(cfg.MODEL.SWIN.DEPTHS), cfg.MODEL.SWIN.WINDOW_SIZE) == (16, [2, 1, 2, 1], 4)
    assert list(cfg.MODEL.SWIN.NUM_HEADS) == [1, 2, 2, 4]
    assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME == "MSDeformAttnPixelDecoder"
    assert (cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES) == (4, 5)
    assert (cfg.MODEL.MASK_FORMER.HIDDEN_DIM, cfg.MODEL.MASK_FORMER.DEC_LAYERS) == (32, 3)
    assert cfg.MODEL.PIXEL_MEAN == pytest.approx([m * 255 for m in IMAGE_MEAN])
    assert cfg.MODEL.PIXEL_STD == pytest.approx([s * 255 for s in IMAGE_STD])
    assert cfg.INPUT.FORMAT == "RGB"
    assert cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON and cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON
    assert cfg.MODEL.WEIGHTS == str(converted / "model.pth")
    # classes.yaml is the 'classes' key of a dataset description file.
    description = {"name": "mine", "format": "semantic", "splits": {"val": {"images": "i", "semantic": "s"}}}
    description.update(yaml.safe_load((converted / "classes.yaml").read_text()))
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(description))
    assert [c["name"] for c in load_dataset_description(str(tmp_path / "mine.yaml")).classes] == CLASSES


def test_swin_features_equal_hf_backbone(our_model, hf_model, images):
    x = images
    with torch.no_grad():
        ours = our_model.backbone(x)
        theirs = hf_model.model.pixel_level_module.encoder(x).feature_maps
    for name, feature in zip(["res2", "res3", "res4", "res5"], theirs):
        torch.testing.assert_close(ours[name], feature, rtol=1e-5, atol=1e-5, msg=name)


def assert_outputs_equal(ours, theirs, rtol):
    for our_key, their_key in (("pred_logits", "class_queries_logits"), ("pred_masks", "masks_queries_logits")):
        expected = getattr(theirs, their_key)
        scale = expected.abs().max().item()
        torch.testing.assert_close(ours[our_key], expected, rtol=rtol, atol=rtol * scale, msg=our_key)


def test_converted_model_gives_hf_outputs(our_model, hf_model, images):
    x = images
    with torch.no_grad():
        ours = our_model.sem_seg_head(our_model.backbone(x))
        theirs = hf_model(pixel_values=x)
    assert ours["pred_masks"].shape == theirs.masks_queries_logits.shape == (2, 5, 18, 23)
    assert_outputs_equal(ours, theirs, rtol=1e-4)


def test_decoder_wider_than_pixel_decoder_converts(tmp_path, images):
    """hidden_dim != feature_size: the transformer decoder projects its inputs (input_projections)."""
    torch.manual_seed(2)
    hf_model = transformers.Mask2FormerForUniversalSegmentation(tiny_hf_config(hidden_dim=64)).eval()
    config = hf_config_to_ours(hf_model.config.to_dict())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    model = build_model(build_config(str(tmp_path / "config.yaml"), ["MODEL.DEVICE", "cpu"])).eval()
    model.load_state_dict(hf_state_dict_to_ours(hf_model.state_dict(), window_size=4))
    with torch.no_grad():
        assert_outputs_equal(model.sem_seg_head(model.backbone(images)), hf_model(pixel_values=images), rtol=1e-4)


def test_round_trip_to_hf_gives_the_original_outputs(converted, hf_model, images, tmp_path):
    tool = load_tool("convert_hf_mask2former.py")
    argv = ["--to-hf", "--config-file", str(converted / "config.yaml"), "--weights", str(converted / "model.pth")]
    assert tool.main(argv + ["--classes", str(converted / "classes.yaml"), str(tmp_path)]) == 0
    back, info = transformers.Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert [back.config.id2label[i] for i in range(4)] == CLASSES
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    assert processor.image_mean == pytest.approx(IMAGE_MEAN) and processor.image_std == pytest.approx(IMAGE_STD)
    x = images
    with torch.no_grad():
        original, round_trip = hf_model(pixel_values=x), back.eval()(pixel_values=x)
    assert torch.equal(round_trip.class_queries_logits, original.class_queries_logits)
    assert torch.equal(round_trip.masks_queries_logits, original.masks_queries_logits)


def test_names_of_models_in_memory_convert_as_files(hf_model, converted):
    """transformers 5.x names its Swin modules in memory otherwise than in its files."""
    from_memory = hf_state_dict_to_ours(hf_model.state_dict(), window_size=4)
    from_file = torch.load(converted / "model.pth", weights_only=True)["model"]
    assert from_memory.keys() == from_file.keys()
    assert all(torch.equal(from_memory[key], from_file[key]) for key in from_file)


def test_pytorch_model_bin_is_read(hf_model, hf_dir, converted, tmp_path):
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    assert load_tool("convert_hf_mask2former.py").main([str(tmp_path), str(tmp_path / "out")]) == 0
    from_bin = torch.load(tmp_path / "out" / "model.pth", weights_only=True)["model"]
    from_safetensors = torch.load(converted / "model.pth", weights_only=True)["model"]
    assert all(torch.equal(from_bin[key], value) for key, value in from_safetensors.items())


def test_unknown_parameters_are_listed(hf_model):
    state = {**hf_model.state_dict(), "model.extra_head.weight": torch.zeros(1)}
    with pytest.raises(HuggingFaceConversionError, match=r"unknown: \['model.extra_head.weight'\]"):
        hf_state_dict_to_ours(state, window_size=4)


def test_backbone_we_lack_is_a_clear_error(tmp_path, capsys):
    resnet = transformers.ResNetConfig(out_features=["stage1", "stage2", "stage3", "stage4"])
    transformers.Mask2FormerConfig(backbone_config=resnet).save_pretrained(tmp_path / "hf")
    assert load_tool("convert_hf_mask2former.py").main([str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    assert "backbone is 'resnet'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_values_our_model_cannot_represent_are_named():
    config = tiny_hf_config().to_dict()
    with pytest.raises(HuggingFaceConversionError, match="encoder_feedforward_dim is 512"):
        hf_config_to_ours({**config, "encoder_feedforward_dim": 512})
    with pytest.raises(HuggingFaceConversionError, match="model_type 'maskformer'"):
        hf_config_to_ours({**config, "model_type": "maskformer"})
    cfg = tiny_cfg(num_classes=2)
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    with pytest.raises(HuggingFaceConversionError, match="MODEL.BACKBONE.NAME is 'build_resnet_backbone'"):
        ours_config_to_hf(cfg, ["a", "b"])
