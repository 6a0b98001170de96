"""mask_former.engine.build_evaluator: upstream's evaluators for each model family and
evaluator_type, and a v1 COCO-panoptic evaluation end to end on a synthetic split."""
import logging
import sys

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model

from conftest import REPO
from helpers import base_cfg, tiny_cfg
from mask_former.data.demo_dataset import DEMO_CATEGORIES, generate_demo_dataset, register_demo_datasets
from mask_former.data.demo_video_dataset import generate_demo_video_dataset, register_demo_video_datasets
from mask_former.engine import EVALUATOR_BUILDERS, build_evaluator
from mask_former.modeling.recipe import RECIPES, build_recipe

V1_COCO_PANOPTIC = REPO / "configs/maskformer/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml"

# (recipe, evaluator_type) -> evaluator classes built with every inference output on.
EXPECTED_EVALUATORS = {
    "maskformer": {
        "sem_seg": {"SemSegEvaluator"},
        "coco": {"COCOEvaluator"},
        "coco_panoptic_seg": {"COCOPanopticEvaluator"},
        "ade20k_panoptic_seg": {"COCOPanopticEvaluator", "SemSegEvaluator"},
        "mapillary_vistas_panoptic_seg": {"COCOPanopticEvaluator", "SemSegEvaluator"},
        "cityscapes_sem_seg": {"CityscapesSemSegEvaluator"},
        "cityscapes_instance": {"CityscapesInstanceEvaluator"},
        "cityscapes_panoptic_seg": {"COCOPanopticEvaluator", "CityscapesSemSegEvaluator"},
    },
    "mask2former": {
        "sem_seg": {"SemSegEvaluator"},
        "coco": {"COCOEvaluator"},
        "coco_panoptic_seg": {"COCOPanopticEvaluator", "SemSegEvaluator", "COCOEvaluator"},
        "ade20k_panoptic_seg": {"COCOPanopticEvaluator", "SemSegEvaluator", "InstanceSegEvaluator"},
        "mapillary_vistas_panoptic_seg": {"COCOPanopticEvaluator", "SemSegEvaluator", "InstanceSegEvaluator"},
        "cityscapes_sem_seg": {"CityscapesSemSegEvaluator"},
        "cityscapes_instance": {"CityscapesInstanceEvaluator"},
        "cityscapes_panoptic_seg": {
            "COCOPanopticEvaluator", "CityscapesSemSegEvaluator", "CityscapesInstanceEvaluator"
        },
        "lvis": {"LVISEvaluator"},
        "ytvis": {"YTVISEvaluator"},
    },
}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    datasets = tmp_path_factory.mktemp("datasets")
    root = datasets / "demo_shapes"
    generate_demo_dataset(str(root), num_train=1, num_val=3, image_size=(48, 64))
    video_root = str(datasets / "demo_shapes_video")
    generate_demo_video_dataset(video_root, num_train=1, num_val=1, image_size=(32, 48), num_frames=(2, 2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DETECTRON2_DATASETS", str(datasets))
        register_demo_datasets(str(root))
        register_demo_video_datasets(video_root)
        yield root
    register_demo_datasets()
    register_demo_video_datasets()


def evaluator_names(evaluator):
    return {type(e).__name__ for e in getattr(evaluator, "_evaluators", [evaluator])}


def register_like(name, source, **metadata):
    """``name``: the data and metadata of ``source``, with ``metadata`` replacing keys."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: DatasetCatalog.get(source))
    merged = {k: v for k, v in MetadataCatalog.get(source).as_dict().items() if k != "name"}
    MetadataCatalog.get(name).set(**{**merged, **metadata})
    return name


def recipe_cfg(recipe, output_dir):
    cfg = tiny_cfg(num_classes=len(DEMO_CATEGORIES))
    cfg.MODEL.MASK_FORMER.RECIPE = recipe
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def test_every_family_has_a_table():
    assert set(EVALUATOR_BUILDERS) == set(EXPECTED_EVALUATORS)
    for recipe, table in EVALUATOR_BUILDERS.items():
        assert set(table) == set(EXPECTED_EVALUATORS[recipe]), recipe


def test_every_recipe_names_an_evaluator_table():
    assert all(recipe.evaluator_family in EVALUATOR_BUILDERS for recipe in RECIPES.values())


@pytest.mark.parametrize(
    "recipe, evaluator_type",
    [(r, t) for r, table in EXPECTED_EVALUATORS.items() for t in sorted(table) if t != "lvis"],
)
def test_evaluators_are_chosen_by_recipe_and_evaluator_type(demo_root, tmp_path, recipe, evaluator_type):
    source = {"coco": "demo_shapes_instance_val", "ytvis": "demo_shapes_video_val"}.get(
        evaluator_type, "demo_shapes_panoptic_val_with_sem_seg"
    )
    name = register_like(f"test_evaluators_{evaluator_type}", source, evaluator_type=evaluator_type)
    cfg = recipe_cfg(recipe, tmp_path)
    assert evaluator_names(build_evaluator(cfg, name)) == EXPECTED_EVALUATORS[recipe][evaluator_type]

    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    if evaluator_type.endswith("panoptic_seg") and evaluator_type != "coco_panoptic_seg":
        assert len(evaluator_names(build_evaluator(cfg, name))) == 1


def test_v1_coco_panoptic_without_panoptic_output_is_reported(demo_root, tmp_path):
    cfg = recipe_cfg("maskformer", tmp_path)
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    with pytest.raises(NotImplementedError, match="No evaluator applies to dataset 'demo_shapes_panoptic_val'"):
        build_evaluator(cfg, "demo_shapes_panoptic_val")


def test_panoptic_instance_evaluation_without_json_file_is_skipped_with_a_warning(demo_root, tmp_path, caplog):
    # Mapillary Vistas panoptic registers json_file=None (it has no COCO instance annotations).
    name = register_like(
        "test_evaluators_no_json", "demo_shapes_panoptic_val_with_sem_seg",
        evaluator_type="mapillary_vistas_panoptic_seg", json_file=None,
    )
    with caplog.at_level(logging.WARNING):
        evaluator = build_evaluator(recipe_cfg("mask2former", tmp_path), name)
    assert evaluator_names(evaluator) == {"COCOPanopticEvaluator", "SemSegEvaluator"}
    assert "'test_evaluators_no_json' has no json_file" in caplog.text


def test_lvis_without_the_lvis_package_names_it(demo_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lvis", None)
    name = register_like("test_evaluators_lvis", "demo_shapes_instance_val", evaluator_type="lvis")
    with pytest.raises(ImportError, match="'test_evaluators_lvis'.*pip install lvis"):
        build_evaluator(recipe_cfg("mask2former", tmp_path), name)


def test_unknown_evaluator_type_is_reported(demo_root):
    MetadataCatalog.get("test_evaluators_unknown").set(evaluator_type="lvis_someday")
    with pytest.raises(NotImplementedError, match="lvis_someday"):
        build_evaluator(tiny_cfg(), "test_evaluators_unknown")
    # v1 had no LVIS evaluation.
    name = register_like("test_evaluators_lvis_v1", "demo_shapes_instance_val", evaluator_type="lvis")
    with pytest.raises(NotImplementedError, match="No maskformer evaluator .* 'lvis'"):
        build_evaluator(recipe_cfg("maskformer", "/tmp"), name)


def test_v1_coco_panoptic_evaluation_runs_on_a_synthetic_split(demo_root, tmp_path):
    # The evaluation settings of a v1 COCO-panoptic config, on a COCO-format panoptic split without
    # semantic labels (as coco_2017_val_panoptic): upstream v1 evaluates PQ only.
    v1 = base_cfg()
    v1.merge_from_file(str(V1_COCO_PANOPTIC))
    assert build_recipe(v1).name == "maskformer"
    v1.DATASETS.TEST = ("demo_shapes_panoptic_val",)
    v1.OUTPUT_DIR = str(tmp_path)
    evaluator = build_evaluator(v1, "demo_shapes_panoptic_val")
    assert evaluator_names(evaluator) == {"COCOPanopticEvaluator"}

    cfg = tiny_cfg(pixel_decoder="BasePixelDecoder", in_feature="res5", num_classes=len(DEMO_CATEGORIES))
    cfg.MODEL.MASK_FORMER.TEST = v1.MODEL.MASK_FORMER.TEST.clone()
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.DATASETS.TRAIN = ("demo_shapes_panoptic_train",)  # the model's thing classes
    cfg.DATASETS.TEST = v1.DATASETS.TEST
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 48, 64
    cfg.DATALOADER.NUM_WORKERS = 0
    assert build_recipe(cfg).name == "maskformer"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    results = inference_on_dataset(model, build_detection_test_loader(cfg, "demo_shapes_panoptic_val"), evaluator)
    assert set(results) == {"panoptic_seg"}
    assert {"PQ", "SQ", "RQ", "PQ_th", "PQ_st"} <= set(results["panoptic_seg"])
    assert 0.0 <= results["panoptic_seg"]["PQ"] <= 100.0
