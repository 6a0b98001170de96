"""The model reproduces upstream's outputs for the fixtures in ../shared/golden (README there)."""
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import Instances
from PIL import Image

from helpers import assert_training_matches_upstream, golden_cfg, run_fixture
from mask_former.checkpoint import MaskFormerCheckpointer

FIXTURES = ["m2f_ade20k_semantic", "m2f_coco_panoptic", "maskformer_coco_panoptic", "maskformer_v1_coco_panoptic",
            "m2f_ade20k_semantic_train"]
TRAIN_FIXTURES = ["maskformer_v1_coco_panoptic", "m2f_ade20k_semantic_train"]
# Models built by upstream MaskFormer (v1) agree on more panoptic pixels (golden README).
PANOPTIC_AGREEMENT = {"maskformer_v1_coco_panoptic": 0.9999}


@pytest.fixture(scope="module")
def golden_runs(request):
    return {}


@pytest.mark.parametrize("name", FIXTURES)
def test_golden_fixture(name, golden_dir):
    incompatible, output, reference = run_fixture(golden_dir(name))
    assert not incompatible.missing_keys
    assert not incompatible.unexpected_keys

    sem_seg = output["sem_seg"]
    assert sem_seg.shape[-2:] == (reference["height"], reference["width"])
    agree = (sem_seg.argmax(0).to(torch.int16) == reference["sem_seg_argmax"]).float().mean().item()
    assert agree >= 0.999
    values = sem_seg.flatten(1).T[reference["sem_seg_pixel_index"]]
    torch.testing.assert_close(values, reference["sem_seg_pixel_values"], atol=1e-4, rtol=1e-4)

    if "panoptic_seg" in reference:
        panoptic_seg, segments_info = output["panoptic_seg"]
        ours = {s["id"]: (s["category_id"], s["isthing"]) for s in segments_info}
        theirs = {s["id"]: (s["category_id"], bool(s["isthing"])) for s in reference["segments_info"]}
        assert sorted(ours.values()) == sorted(theirs.values())
        agreement = PANOPTIC_AGREEMENT.get(name, 0.995)
        assert (panoptic_seg == reference["panoptic_seg"]).float().mean().item() >= agreement
        assert ours == theirs

    if "instances" in reference:
        instances, expected = output["instances"], reference["instances"]
        torch.testing.assert_close(instances.scores, torch.as_tensor(expected["scores"]), atol=1e-4, rtol=0)
        assert torch.equal(instances.pred_classes, torch.as_tensor(expected["pred_classes"]))
        masks = np.unpackbits(expected["pred_masks_packed"], axis=-1)[..., : reference["width"]].astype(bool)
        assert (instances.pred_masks.bool().numpy() == masks).mean() >= 0.999


def stripe_targets(classes, height, width) -> Instances:
    """Target i covers the i-th of four vertical stripes of equal width (golden README)."""
    targets = Instances((height, width))
    targets.gt_classes = torch.tensor(classes, dtype=torch.int64)
    masks = torch.zeros(len(classes), height, width, dtype=torch.bool)
    for i in range(len(classes)):
        masks[i, :, i * width // 4:(i + 1) * width // 4] = True
    targets.gt_masks = masks
    return targets


@pytest.mark.parametrize("name", TRAIN_FIXTURES)
def test_golden_training_losses_and_gradients(name, golden_dir):
    folder = golden_dir(name)
    cfg = golden_cfg(folder)
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(folder / "weights.pth"))
    reference = torch.load(folder / "outputs.pt", weights_only=False)
    train, height, width = reference["train"], reference["height"], reference["width"]
    image = torch.from_numpy(np.array(Image.open(folder / "input.png").convert(cfg.INPUT.FORMAT))).permute(2, 0, 1)
    batch = [{"image": image.contiguous(), "instances": stripe_targets(train["classes"], height, width),
              "height": height, "width": width}]
    assert_training_matches_upstream(model, batch, train)


@pytest.mark.parametrize("checkpointer", [DetectionCheckpointer, MaskFormerCheckpointer])
def test_model_zoo_pkl_checkpoint_loads_like_the_pth(golden_dir, tmp_path, checkpointer):
    """Upstream's model zoo ships ``.pkl`` files: numpy arrays under "model", "__author__" and
    "matching_heuristics"; MaskFormerCheckpointer reads them with its numpy-only unpickler."""
    import pickle

    folder = golden_dir("m2f_coco_panoptic")
    state = torch.load(folder / "weights.pth", weights_only=True)["model"]
    pkl = tmp_path / "model_final.pkl"
    with open(pkl, "wb") as f:
        zoo = {"model": {k: v.numpy() for k, v in state.items()}, "__author__": "upstream"}
        pickle.dump({**zoo, "matching_heuristics": True}, f)
    model = build_model(golden_cfg(folder)).eval()
    options = {"for_inference": True} if checkpointer is MaskFormerCheckpointer else {}
    checkpointer(model, **options).load(str(pkl))
    loaded = model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("name", FIXTURES)
def test_golden_weights_load_completely_with_the_maskformer_checkpointer(name, golden_dir):
    folder = golden_dir(name)
    model = build_model(golden_cfg(folder))
    MaskFormerCheckpointer(model, for_inference=True).load(str(folder / "weights.pth"))  # strict: raises otherwise
