"""How closely an exported model reproduces upstream's outputs on the golden fixtures (``../shared/golden``):
for each fixture, the share of pixels whose semantic argmax, and whose panoptic category, agree with upstream's
float32 outputs, the measure of the reduced-precision variants.

    .venv/bin/python benchmarks/export_agreement.py [--quantize int8] [--golden ../shared/golden] [--fixtures NAME ...]

Each fixture's model is built from its config, loads its weights, is exported to ONNX into a temporary folder
(``tools/export_model.py``'s code, ``--quantize`` as there) and run by ``load_exported`` on the fixture's image.
Prints a markdown table.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from PIL import Image

import mask_former  # noqa: F401  (registers the model)
from mask_former.assembly import pixel_categories
from mask_former.config import build_config
from mask_former.export import load_exported
from mask_former.export.exporter import export_model
from mask_former.export.quantize import QUANTIZATIONS

IMAGE_FIXTURES = ["m2f_coco_panoptic", "m2f_ade20k_semantic", "maskformer_coco_panoptic",
                  "maskformer_v1_coco_panoptic", "m2f_ade20k_semantic_train"]


def agreement(folder: Path, quantize) -> dict:
    """``{"semantic": share, "panoptic": share or None}`` of the exported fixture against upstream's outputs."""
    cfg = build_config(str(folder / "config.yaml"), ["MODEL.DEVICE", "cpu"])
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(str(folder / "weights.pth"))
    with tempfile.TemporaryDirectory() as directory:
        export_model(model, cfg, "onnx", directory, quantize=quantize)
        predictor = load_exported(directory)
        image = np.array(Image.open(folder / "input.png").convert(predictor.meta["input_format"]))
        result = predictor(image)
    reference = torch.load(folder / "outputs.pt", weights_only=False)
    shares = {"semantic": (result["sem_seg"].argmax(0) == reference["sem_seg_argmax"].numpy()).mean(), "panoptic": None}
    if "panoptic_seg" in reference:
        ours = pixel_categories(*result["panoptic_seg"])
        shares["panoptic"] = (ours == pixel_categories(reference["panoptic_seg"], reference["segments_info"])).mean()
    return shares


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quantize", default=None, choices=sorted(QUANTIZATIONS),
                        help="the exported variant (default: float32)")
    parser.add_argument("--golden", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "golden"))
    parser.add_argument("--fixtures", nargs="+", default=IMAGE_FIXTURES)
    args = parser.parse_args(argv)
    golden = Path(args.golden)
    missing = [name for name in args.fixtures if not (golden / name / "outputs.pt").is_file()]
    if missing:
        print(f"error: no golden fixture {', '.join(missing)} under {golden}", file=sys.stderr)
        return 2
    print("| fixture | export | semantic argmax agrees | panoptic category agrees |")
    print("|---|---|---|---|")
    for name in args.fixtures:
        print(f"[export_agreement] {name} ...", file=sys.stderr, flush=True)
        shares = agreement(golden / name, args.quantize)
        panoptic = "-" if shares["panoptic"] is None else f"{100 * shares['panoptic']:.2f}%"
        print(f"| {name} | {args.quantize or 'float32'} | {100 * shares['semantic']:.2f}% | {panoptic} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
