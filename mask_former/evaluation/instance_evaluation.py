"""COCO instance-segmentation AP of a model trained on a panoptic dataset."""
from typing import Dict, List

import torch
from detectron2.data.catalog import Metadata
from detectron2.evaluation import COCOEvaluator

from ..data.datasets.registration import model_classes

__all__ = ["InstanceSegEvaluator"]


class InstanceSegEvaluator(COCOEvaluator):
    """
    ``COCOEvaluator`` (segm AP, pycocotools' COCOeval) for a model whose classes are all the
    classes of a panoptic dataset, things and stuff.

    ``COCOEvaluator`` expects the thing classes to be the model's classes ``0..T-1``; in panoptic
    datasets such as ADE20K they are scattered among the stuff classes. Predictions are mapped here
    to the thing classes' dataset ids (``metadata.thing_dataset_id_to_contiguous_id``) and those of
    stuff classes are dropped. The dataset's metadata must have ``json_file``, its instance
    annotations in COCO format.
    """

    def __init__(self, dataset_name: str, output_dir: str = None, *, distributed: bool = True):
        super().__init__(
            dataset_name, tasks=("segm",), distributed=distributed, output_dir=output_dir, use_fast_impl=False
        )
        # (dataset id, model class) of the things, in the order of the model's classes.
        things = sorted(self._metadata.thing_dataset_id_to_contiguous_id.items(), key=lambda item: item[1])
        self._model_class_to_thing = {model_class: i for i, (_, model_class) in enumerate(things)}
        self._metadata = Metadata(
            **{
                **self._metadata.as_dict(),
                "thing_dataset_id_to_contiguous_id": {dataset_id: i for i, (dataset_id, _) in enumerate(things)},
                "thing_classes": [model_classes(self._metadata)[0][model_class] for _, model_class in things],
            }
        )

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        super().process(inputs, [self._things_only(output) for output in outputs])

    def _things_only(self, output: Dict) -> Dict:
        if "instances" not in output:
            return output
        instances = output["instances"].to(self._cpu_device)
        keep = torch.tensor([int(c) in self._model_class_to_thing for c in instances.pred_classes], dtype=torch.bool)
        instances = instances[keep]
        instances.pred_classes = torch.tensor(
            [self._model_class_to_thing[int(c)] for c in instances.pred_classes], dtype=torch.int64
        )
        return {**output, "instances": instances}

