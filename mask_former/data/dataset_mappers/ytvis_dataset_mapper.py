"""The clip mapper of video instance segmentation (upstream Mask2Former's ``YTVISDatasetMapper``)."""
import copy
import logging
import random
from typing import Dict, List

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.structures import BitMasks, Instances

from ...errors import DatasetFileError
from .annotations import annotations_to_masks
from .build import DATASET_MAPPER_REGISTRY
from .clip_augmentations import augment_clip, build_clip_augmentations
from .padding import image_to_tensor
from .reading import read_image_file
from .targets import mask_boxes

__all__ = ["YTVISDatasetMapper", "sample_clip_frames"]


def sample_clip_frames(video_length: int, num_frames: int, frame_range: int, shuffle: bool) -> List[int]:
    """Upstream's frame draw for a training clip: a reference frame (``random.randrange``), then
    ``num_frames - 1`` others drawn with replacement (``np.random.choice``) among the frames at most
    ``frame_range`` away from it; sorted, then shuffled (``random.shuffle``) where ``shuffle``.

    A one-frame video repeats its frame (upstream fails on it when ``num_frames`` > 1).

    Returns:
        list[int]: ``num_frames`` frame indices.
    """
    reference = random.randrange(video_length)
    start, end = max(0, reference - frame_range), min(video_length, reference + frame_range + 1)
    candidates = np.array(list(range(start, reference)) + list(range(reference + 1, end)))
    if len(candidates) or num_frames == 1:
        others = np.random.choice(candidates, num_frames - 1).tolist()
    else:
        others = [reference] * (num_frames - 1)
    selected = sorted(others + [reference])
    if shuffle:
        random.shuffle(selected)
    return selected


def _track_slots(frame_annotations: List[List[Dict]], selected: List[int]) -> Dict[int, int]:
    """Track id -> target index in the clip, for every object seen in a selected frame. The order is
    upstream's: that of a Python set of the ids (filled frame by frame), so that targets line up
    with upstream's under the same seed."""
    ids = set()
    for frame in selected:
        ids.update(obj["id"] for obj in frame_annotations[frame])
    return {track_id: slot for slot, track_id in enumerate(ids)}


@DATASET_MAPPER_REGISTRY.register_as("ytvis")
class YTVISDatasetMapper:
    """Maps one video's dict (:func:`mask_former.data.datasets.load_ytvis_json`) to a clip for the
    video model, as upstream Mask2Former's ``YTVISDatasetMapper``.

    Training draws ``sampling_frame_num`` frames (:func:`sample_clip_frames`); inference takes every
    frame. The returned dict holds the video's keys (``height``, ``width``, ``length``,
    ``video_id``) and, per selected frame in clip order:

    - ``image``: list of uint8 ``[3, H, W]`` in ``image_format``;
    - ``file_names``: list of the frames' files;
    - ``instances`` (training; an empty list at inference): list of ``Instances``, one per frame,
      with the same targets in the same order in every frame: one per object track seen in any
      selected frame (crowd annotations included, as upstream). ``gt_ids`` int64 ``[N]`` is the
      track id, or -1 where the object is absent from the frame or its mask is empty after
      augmentation; ``gt_classes`` int64 ``[N]`` the contiguous class, or ``num_classes`` where
      the object is absent (crowd annotations count as absent); ``gt_masks`` ``BitMasks``
      ``[N, H, W]`` (empty where absent); ``gt_boxes`` the masks' boxes.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: list,
        image_format: str,
        num_classes: int,
        sampling_frame_num: int = 2,
        sampling_frame_range: int = 5,
        sampling_frame_shuffle: bool = False,
        cut_polygons: bool = True,
    ):
        """
        Args:
            is_train: draw a training clip with targets, or take every frame without targets.
            augmentations: see :func:`build_clip_augmentations` (``ClipLevel`` ones are drawn once
                per clip).
            image_format: format of ``image``, as in ``detection_utils.read_image``.
            num_classes: number of classes; the class of absent objects; category ids outside
                ``[0, num_classes)`` are an error.
            sampling_frame_num, sampling_frame_range, sampling_frame_shuffle: the frame draw of
                :func:`sample_clip_frames`.
            cut_polygons: cut polygons at a crop with shapely, as upstream (see
                ``transform_segmentation``).
        """
        if sampling_frame_num < 1:
            raise ValueError(f"INPUT.SAMPLING_FRAME_NUM must be at least 1, got {sampling_frame_num}")
        self.is_train = is_train
        self.augmentations = list(augmentations)
        self.image_format = image_format
        self.num_classes = num_classes
        self.sampling_frame_num = sampling_frame_num
        self.sampling_frame_range = sampling_frame_range
        self.sampling_frame_shuffle = sampling_frame_shuffle
        self.cut_polygons = cut_polygons
        mode = "training" if is_train else "inference"
        logging.getLogger(__name__).info(f"[{type(self).__name__}] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "augmentations": build_clip_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "sampling_frame_num": cfg.INPUT.SAMPLING_FRAME_NUM,
            "sampling_frame_range": cfg.INPUT.SAMPLING_FRAME_RANGE,
            "sampling_frame_shuffle": cfg.INPUT.SAMPLING_FRAME_SHUFFLE,
            "cut_polygons": cfg.INPUT.CROP_POLYGONS_WITH_SHAPELY,
        }

    def _read_frame(self, dataset_dict: Dict, file_name: str) -> np.ndarray:
        image = read_image_file(file_name, self.image_format)
        expected = (dataset_dict["height"], dataset_dict["width"])
        if image.shape[:2] != expected:
            raise DatasetFileError(
                file_name,
                f"frame is {image.shape[1]}x{image.shape[0]} (WxH) but video {dataset_dict.get('video_id')} "
                f"is {expected[1]}x{expected[0]}",
            )
        return image

    def _frame_targets(self, annotations, slots, transforms, original_size, output_size, source) -> Instances:
        """The clip's targets in one frame (see the class docstring)."""
        visible = [obj for obj in annotations if not obj.get("iscrowd", 0)]
        targets = annotations_to_masks(
            visible, transforms, original_size, output_size, self.num_classes, source, self.cut_polygons
        )
        clip_classes = torch.full((len(slots),), self.num_classes, dtype=torch.int64)
        clip_ids = torch.full((len(slots),), -1, dtype=torch.int64)
        clip_masks = torch.zeros((len(slots), *output_size), dtype=torch.bool)
        index = torch.tensor([slots[obj["id"]] for obj in visible], dtype=torch.int64)
        clip_classes[index] = targets.classes
        clip_masks[index] = targets.masks
        clip_ids[index] = torch.tensor([obj["id"] for obj in visible], dtype=torch.int64)
        boxes = mask_boxes(clip_masks)
        # As upstream's filter_empty_instances: an object whose mask is empty is absent. An empty mask's box is
        # all zeros; any other box ends at x >= 1.
        clip_ids[boxes.tensor[:, 2] == 0] = -1

        instances = Instances(output_size)
        instances.gt_classes = clip_classes
        instances.gt_ids = clip_ids
        instances.gt_masks = BitMasks(clip_masks)
        instances.gt_boxes = boxes
        return instances

    def __call__(self, dataset_dict: Dict) -> Dict:
        """
        Args:
            dataset_dict: one video's dict (not modified).

        Returns:
            dict: the clip, described in the class docstring.
        """
        dataset_dict = copy.deepcopy(dataset_dict)
        length = dataset_dict["length"]
        if self.is_train:
            selected = sample_clip_frames(
                length, self.sampling_frame_num, self.sampling_frame_range, self.sampling_frame_shuffle
            )
        else:
            selected = list(range(length))
        video_annotations = dataset_dict.pop("annotations", None)
        video_files = dataset_dict.pop("file_names")
        file_names = [video_files[frame] for frame in selected]
        with_targets = self.is_train and video_annotations is not None
        slots = _track_slots(video_annotations, selected) if with_targets else {}

        frames = (self._read_frame(dataset_dict, name) for name in file_names)
        dataset_dict.update(image=[], instances=[], file_names=file_names)
        augmented = augment_clip(frames, self.augmentations)
        for frame, file_name, (image, transforms) in zip(selected, file_names, augmented):
            dataset_dict["image"].append(image_to_tensor(image))
            if with_targets:
                original_size = (dataset_dict["height"], dataset_dict["width"])
                dataset_dict["instances"].append(
                    self._frame_targets(
                        video_annotations[frame], slots, transforms, original_size, image.shape[:2], file_name
                    )
                )
        return dataset_dict
