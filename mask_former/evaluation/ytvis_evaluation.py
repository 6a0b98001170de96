"""Video instance segmentation evaluation: the YouTube-VIS metric (upstream Mask2Former's
``YTVISEvaluator`` and its ``YTVOSeval``).

The YouTube-VIS metric is COCO's mask AP with videos in place of images and object tracks in place
of objects: the IoU of a predicted and a ground-truth track is the sum over frames of their
intersections divided by the sum over frames of their unions, and a track's area (for APs / APm /
APl, split at 128² and 256² pixels) is its mean area over the frames that show it. Matching,
accumulation and the summary are pycocotools' ``COCOeval``'s, run on those IoUs and areas.
"""
import itertools
import json
import logging
import os
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional, Sequence

import detectron2.utils.comm as comm
import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from ..data.datasets.loaders import read_json

__all__ = ["YTVISEvaluator", "YTVISeval", "video_iou", "video_predictions_to_json"]

# The summary of COCOeval.stats kept, by index: AP over IoU .5:.95, at .5 and .75, by area, and
# AR with at most 1 and 10 detections per video.
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10")
# YouTube-VIS's area ranges: all, small (< 128²), medium, large (> 256²).
AREA_RANGES = [[0**2, 1e5**2], [0**2, 128**2], [128**2, 256**2], [256**2, 1e5**2]]


def _frame_rle(segmentation, height: int, width: int):
    """A frame's segmentation (polygons, uncompressed or compressed RLE) as compressed RLE; None
    where the object is absent."""
    if not segmentation:
        return None
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_util.frPyObjects(segmentation, height, width)
    return segmentation


def _mean_area(areas: Sequence) -> float:
    """Mean of the nonzero areas (0 where there is none), as YouTube-VIS's ``avg_area``."""
    present = [a for a in areas if a]
    return float(np.array(present).mean()) if present else 0


def video_iou(predicted: Sequence, ground_truth: Sequence, video_id=None) -> float:
    """IoU of two object tracks: summed intersections over summed unions across frames.

    Args:
        predicted, ground_truth: per-frame compressed RLEs, or None where the object is absent;
            frames past the shorter sequence are left out (as YouTube-VIS).
        video_id: named in the error.

    Returns:
        float: 0 where both are absent throughout.

    Raises:
        ValueError: a frame's masks differ in size.
    """
    intersection = union = 0.0
    for frame, (d, g) in enumerate(zip(predicted, ground_truth)):
        if d and g:
            if list(d["size"]) != list(g["size"]):
                raise ValueError(
                    f"video {video_id}, frame {frame}: predicted mask of size {list(d['size'])} but the "
                    f"ground truth is {list(g['size'])} (height, width)"
                )
            inter = int(mask_util.area(mask_util.merge([d, g], intersect=True)))
            intersection += inter
            union += int(mask_util.area(d)) + int(mask_util.area(g)) - inter
        elif d or g:
            union += int(mask_util.area(d or g))
    return intersection / union if union > 0 else 0.0


class YTVISeval(COCOeval):
    """pycocotools' ``COCOeval`` on videos: ``params.imgIds`` are video ids, ``computeIoU`` is
    :func:`video_iou`, areas are mean track areas (see the module docstring).

    Args:
        ground_truth: the content of a YouTube-VIS json (``videos``, ``categories``,
            ``annotations``). Annotation areas are its ``areas`` where given (as YouTube-VIS), else
            the masks' areas.
        predictions: dicts with ``video_id``, ``category_id`` (dataset id), ``score`` and
            ``segmentations`` (per frame, compressed RLE or None).
    """

    def __init__(self, ground_truth: Dict, predictions: List[Dict]):
        super().__init__(iouType="segm")
        self._videos = {video["id"]: video for video in ground_truth["videos"]}
        self._ground_truth = ground_truth.get("annotations") or []
        self._predictions = predictions
        unknown = sorted({p["video_id"] for p in predictions} - set(self._videos), key=str)
        if unknown:
            raise ValueError(f"predictions for videos {unknown[:10]} that the ground truth does not list")
        self.params.imgIds = sorted(self._videos)
        self.params.catIds = sorted(c["id"] for c in ground_truth.get("categories", []))
        self.params.areaRng = AREA_RANGES

    def _track(self, annotation: Dict, index: int, is_prediction: bool) -> Dict:
        video = self._videos[annotation["video_id"]]
        segmentations = [_frame_rle(s, video["height"], video["width"]) for s in annotation["segmentations"]]
        mask_areas = [int(mask_util.area(s)) if s else None for s in segmentations]
        areas = mask_areas if is_prediction or "areas" not in annotation else annotation["areas"]
        return {
            "id": index + 1 if is_prediction else annotation["id"],
            "image_id": annotation["video_id"],
            "category_id": annotation["category_id"],
            "segmentations": segmentations,
            "area": _mean_area(areas),
            "iscrowd": 0 if is_prediction else int(annotation.get("iscrowd", 0)),
            "score": annotation.get("score"),
        }

    def _prepare(self):
        # COCOeval.evaluate() calls this to fill _gts / _dts: here from tracks instead of COCO objects.
        p = self.params
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        categories = set(p.catIds)
        for index, annotation in enumerate(self._ground_truth):
            if annotation["category_id"] in categories or not p.useCats:
                track = self._track(annotation, index, is_prediction=False)
                track["ignore"] = track["iscrowd"]
                self._gts[track["image_id"], track["category_id"]].append(track)
        for index, prediction in enumerate(self._predictions):
            if prediction["category_id"] in categories or not p.useCats:
                track = self._track(prediction, index, is_prediction=True)
                self._dts[track["image_id"], track["category_id"]].append(track)
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId, catId):  # noqa: N802 (COCOeval's name)
        """IoUs ``[D, G]`` of the video's predicted tracks (best score first, at most
        ``maxDets[-1]``) with its ground-truth tracks, of one category (all where not ``useCats``)."""
        p = self.params
        categories = [catId] if p.useCats else p.catIds
        gt = [g for c in categories for g in self._gts[imgId, c]]
        dt = [d for c in categories for d in self._dts[imgId, c]]
        if not gt and not dt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        ious = np.zeros((len(dt), len(gt)))
        for i, j in np.ndindex(ious.shape):
            ious[i, j] = video_iou(dt[i]["segmentations"], gt[j]["segmentations"], imgId)
        return ious


def video_predictions_to_json(video_id, scores, labels, masks) -> List[Dict]:
    """One video's predictions in the YouTube-VIS results format.

    Args:
        video_id: the video's id.
        scores: ``[N]`` floats; labels: ``[N]`` contiguous class ids.
        masks: ``[N, T, H, W]`` bool (tensor or array), or a list of ``[T, H, W]``.

    Returns:
        list[dict]: per prediction, ``video_id``, ``score``, ``category_id`` (contiguous) and
        ``segmentations`` (one compressed RLE per frame, ``counts`` as str).
    """
    results = []
    for score, label, mask in zip(scores, labels, masks):
        mask = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        rles = mask_util.encode(np.asfortranarray(mask.transpose(1, 2, 0).astype(np.uint8)))
        for rle in rles:
            rle["counts"] = rle["counts"].decode("ascii")
        results.append(
            {"video_id": video_id, "score": float(score), "category_id": int(label), "segmentations": rles}
        )
    return results


class YTVISEvaluator(DatasetEvaluator):
    """YouTube-VIS evaluation of a video dataset registered with a ``json_file`` in the YouTube-VIS
    format (upstream Mask2Former's ``YTVISEvaluator``).

    ``evaluate`` writes ``results.json`` (YouTube-VIS's results format, dataset category ids: what
    the YouTube-VIS / OVIS servers take, zipped) to ``output_dir`` and, where the json has
    annotations, returns ``{"segm": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10",
    "AP-<class>" ...}}`` in percent (NaN where undefined); where it has none (validation and test
    splits of YouTube-VIS and OVIS), it says so and returns ``{}``.
    """

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
    ):
        """
        Args:
            dataset_name: a registered dataset whose metadata has ``json_file`` (and
                ``thing_dataset_id_to_contiguous_id`` to map predicted classes back).
            tasks: only ("segm",) is evaluated; None means that.
            distributed: gather the predictions of all processes and evaluate in the main one.
            output_dir: where ``results.json`` is written; None writes nothing.
        """
        if tasks is not None and tuple(tasks) != ("segm",):
            raise ValueError(f"YTVISEvaluator evaluates the task 'segm' only, not {tuple(tasks)}")
        self._logger = logging.getLogger(__name__)
        self._distributed = distributed
        self._output_dir = output_dir
        self._metadata = MetadataCatalog.get(dataset_name)
        json_file = self._metadata.get("json_file")
        if json_file is None:
            raise ValueError(f"Dataset {dataset_name!r} has no json_file in its metadata to evaluate against")
        self._json_file = PathManager.get_local_path(json_file)
        self._ground_truth = read_json(self._json_file, "Video annotation file")
        self._do_evaluation = bool(self._ground_truth.get("annotations"))
        self.reset()

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        """
        Args:
            inputs: a list with one video's dict (``video_id``, ``image`` frames, ...).
            outputs: the video model's output for it: a dict with ``pred_scores`` ``[N]``,
                ``pred_labels`` ``[N]`` (contiguous ids) and ``pred_masks`` ``[N, T, H, W]`` bool
                (or a one-element list of that dict).
        """
        if len(inputs) != 1:
            raise ValueError(f"YTVISEvaluator takes one video per batch, got {len(inputs)}")
        if isinstance(outputs, (list, tuple)):
            (outputs,) = outputs
        self._predictions.extend(
            video_predictions_to_json(
                inputs[0]["video_id"], outputs["pred_scores"], outputs["pred_labels"], outputs["pred_masks"]
            )
        )

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if not predictions:
            self._logger.warning("[YTVISEvaluator] Did not receive valid predictions.")
            return {}
        predictions = self._to_dataset_ids(predictions)
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "results.json")
            self._logger.info(f"Saving results to {path}")
            with PathManager.open(path, "w") as f:
                json.dump(predictions, f)
        if not self._do_evaluation:
            self._logger.info(
                f"{self._json_file} has no annotations: nothing is evaluated here; submit results.json "
                "(zipped) to the dataset's evaluation server."
            )
            return {}
        ytvis_eval = YTVISeval(self._ground_truth, predictions)
        ytvis_eval.evaluate()
        ytvis_eval.accumulate()
        ytvis_eval.summarize()
        return OrderedDict(segm=self._derive_results(ytvis_eval))

    def _to_dataset_ids(self, predictions: List[Dict]) -> List[Dict]:
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        if id_map is None:
            return predictions
        to_dataset_id = {contiguous: dataset_id for dataset_id, contiguous in id_map.items()}
        unknown = sorted({p["category_id"] for p in predictions} - set(to_dataset_id))
        if unknown:
            raise ValueError(
                f"predicted classes {unknown} are not in [0, {len(to_dataset_id)}), the dataset's classes"
            )
        return [{**p, "category_id": to_dataset_id[p["category_id"]]} for p in predictions]

    def _derive_results(self, ytvis_eval: YTVISeval) -> Dict[str, float]:
        results = {
            metric: float(ytvis_eval.stats[i] * 100) if ytvis_eval.stats[i] >= 0 else float("nan")
            for i, metric in enumerate(METRICS)
        }
        self._logger.info("Evaluation results for segm: \n" + create_small_table(results))
        if len(ytvis_eval.params.catIds) <= 1:  # as upstream: no per-class AP of a single class
            return results
        names = {c["id"]: c["name"] for c in self._ground_truth.get("categories", [])}
        # precision: [IoU thresholds, recall thresholds, classes, area ranges, max detections]
        precision = ytvis_eval.eval["precision"]
        per_class = []
        for k, category_id in enumerate(ytvis_eval.params.catIds):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            per_class.append((names[category_id], float(np.mean(values) * 100) if values.size else float("nan")))
        columns = min(6, len(per_class) * 2)
        flat = list(itertools.chain(*per_class))
        table = tabulate(
            itertools.zip_longest(*[flat[i::columns] for i in range(columns)]),
            tablefmt="pipe", floatfmt=".3f", headers=["category", "AP"] * (columns // 2), numalign="left",
        )
        self._logger.info("Per-category segm AP: \n" + table)
        results.update({f"AP-{name}": ap for name, ap in per_class})
        return results
