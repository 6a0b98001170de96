"""Pieces shared by the dataset mappers: reading and checking files, padding, building targets."""
import numpy as np
import pycocotools.mask as mask_util
import torch
from panopticapi.utils import rgb2id

from detectron2.data import MetadataCatalog, detection_utils
from detectron2.structures import Instances, polygons_to_bitmask
from detectron2.utils.file_io import PathManager

from ..datasets.errors import DatasetFileError

# Images are padded with this value (as upstream, and detectron2's FixedSizeCrop): close to the
# pixel mean, so that after normalisation the padding looks like an average pixel.
IMAGE_PAD_VALUE = 128
# Value of unlabelled pixels in a panoptic id map (COCO panoptic's VOID).
PANOPTIC_VOID_ID = 0


def require_training(mapper_name, is_train):
    """Raise unless ``is_train``: the MaskFormer mappers build training targets only."""
    if not is_train:
        raise ValueError(
            f"{mapper_name} is a training mapper (is_train=False given); evaluation reads images "
            "with detectron2's DatasetMapper, as upstream Mask2Former's train_net.py does."
        )


def resolve_ignore_label(cfg):
    """The label of unlabelled pixels: the ``ignore_label`` of the first training dataset's
    metadata, or ``cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE`` where the metadata has none."""
    default = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
    if not cfg.DATASETS.TRAIN:
        return default
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("ignore_label", default)


def read_image_file(file_name, image_format=None):
    """Read an image, with an error naming the file where it is missing or cannot be decoded.

    Args:
        file_name (str): the image's path.
        image_format (str, optional): as in ``detection_utils.read_image`` ("RGB", "BGR", ...);
            None keeps the file's own channels (label maps).

    Returns:
        np.ndarray: ``[H, W, C]`` uint8 for a colour format, ``[H, W]`` for a one-channel file.
    """
    if not PathManager.isfile(file_name):
        raise FileNotFoundError(f"Image file not found: {file_name}")
    try:
        return detection_utils.read_image(file_name, format=image_format)
    except (OSError, SyntaxError, ValueError) as e:  # what Pillow raises for a broken file
        raise OSError(f"Cannot decode image file {file_name}: {e}") from e


def read_dataset_image(dataset_dict, image_format):
    """The image of a dataset dict, ``[H, W, 3]`` uint8, checked against its width and height."""
    image = read_image_file(dataset_dict["file_name"], image_format)
    detection_utils.check_image_size(dataset_dict, image)
    return image


def require_key(dataset_dict, key, mapper_name):
    """``dataset_dict[key]``, with an error naming the image where the key is missing."""
    if key not in dataset_dict:
        raise KeyError(
            f"{mapper_name} needs '{key}' in the dataset dict of {dataset_dict.get('file_name')}"
        )
    return dataset_dict[key]


def read_label_map(file_name, image_shape):
    """Read a one-channel label map (semantic classes), checking its size against the image's.

    Returns:
        np.ndarray: ``[H, W]`` float64, so that every transform can resample it (torch has no
        kernels for uint16).
    """
    labels = read_image_file(file_name)
    if labels.ndim != 2:
        raise ValueError(f"Label map {file_name} has shape {labels.shape}; expected one channel")
    _check_same_size(labels, image_shape, file_name)
    return labels.astype(np.float64)


def read_panoptic_ids(file_name, image_shape):
    """Read a COCO-format panoptic PNG (segment id = R + 256 G + 256^2 B).

    Returns:
        np.ndarray: ``[H, W]`` float64 segment ids (exact below 2^53), 0 for VOID.
    """
    ids = rgb2id(read_image_file(file_name, "RGB"))
    _check_same_size(ids, image_shape, file_name)
    return ids.astype(np.float64)


def _check_same_size(labels, image_shape, file_name):
    if labels.shape[:2] != tuple(image_shape[:2]):
        raise DatasetFileError(
            file_name,
            f"label file is {labels.shape[1]}x{labels.shape[0]} (WxH) but its image "
            f"is {image_shape[1]}x{image_shape[0]}",
        )


def check_class_ids(class_ids, num_classes, source, ignore_label=None):
    """Raise a ``DatasetFileError`` naming ``source`` if any class id is outside ``[0, num_classes)``
    (``ignore_label`` allowed).

    Args:
        class_ids (array-like): class ids, or a whole label map.
        num_classes (int): ``cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES``.
        source (str): the file the ids come from.
        ignore_label (int, optional): the label of unlabelled pixels.
    """
    values = np.unique(np.asarray(class_ids))
    bad = values[(values < 0) | (values >= num_classes)]
    if ignore_label is not None:
        bad = bad[bad != ignore_label]
    if len(bad):
        allowed = f" or the ignore label {ignore_label}" if ignore_label is not None else ""
        raise DatasetFileError(
            source,
            f"class ids {bad.astype(np.int64).tolist()} are not in "
            f"[0, {num_classes}) (MODEL.SEM_SEG_HEAD.NUM_CLASSES){allowed}",
        )


def image_to_tensor(image):
    """``[H, W, C]`` array to a contiguous ``[C, H, W]`` tensor."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def pad_to_divisibility(tensor, size_divisibility, value):
    """Pad the last two (spatial) dims at the bottom and right up to multiples of
    ``size_divisibility`` (no padding if it is <= 0).

    With the usual configs (crop size == ``INPUT.SIZE_DIVISIBILITY``) this pads every crop to the
    crop size, as upstream; a larger image is padded to the next multiple rather than cut.

    Args:
        tensor (Tensor): ``[..., H, W]``.
        size_divisibility (int): ``cfg.INPUT.SIZE_DIVISIBILITY``.
        value: the fill value.

    Returns:
        Tensor: ``[..., H', W']``, same dtype.
    """
    if size_divisibility <= 0:
        return tensor
    height, width = tensor.shape[-2:]
    padded_height = -(-height // size_divisibility) * size_divisibility
    padded_width = -(-width // size_divisibility) * size_divisibility
    padded = tensor.new_full((*tensor.shape[:-2], padded_height, padded_width), value)
    padded[..., :height, :width] = tensor
    return padded


def masks_to_instances(image_size, classes, masks):
    """Training targets from per-segment masks, dropping segments with no pixel (e.g. cropped
    away: a class present only in the target but not in the image would teach wrong classes).

    Args:
        image_size (tuple[int, int]): (H, W).
        classes (Tensor): int64 ``[N]``.
        masks (Tensor): bool ``[N, H, W]``.

    Returns:
        Instances: ``gt_classes`` int64 ``[M]`` and ``gt_masks`` bool ``[M, H, W]``, M <= N.
    """
    keep = masks.flatten(1).any(dim=1)
    instances = Instances(image_size)
    instances.gt_classes = classes[keep]
    instances.gt_masks = masks[keep]
    return instances


def sem_seg_to_instances(sem_seg, ignore_label):
    """One target mask per class present in a label map; the ignore label is not a class.

    Args:
        sem_seg (Tensor): int64 ``[H, W]``.
        ignore_label (int): the label of unlabelled pixels.

    Returns:
        Instances: ``gt_classes`` int64 ``[N]`` (sorted) and ``gt_masks`` bool ``[N, H, W]``.
    """
    classes = torch.unique(sem_seg)
    classes = classes[classes != ignore_label]
    masks = sem_seg[None] == classes[:, None, None]
    return masks_to_instances(tuple(sem_seg.shape), classes, masks)


def segments_to_instances(pan_ids, segments_info):
    """One target mask per non-crowd segment of a panoptic id map.

    Args:
        pan_ids (Tensor): int64 ``[H, W]`` segment ids.
        segments_info (list[dict]): with ``id``, ``category_id`` (contiguous) and ``iscrowd``.

    Returns:
        Instances: ``gt_classes`` int64 ``[N]`` and ``gt_masks`` bool ``[N, H, W]``.
    """
    segments = [s for s in segments_info if not s.get("iscrowd", 0)]
    classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    segment_ids = torch.tensor([s["id"] for s in segments], dtype=torch.int64)
    masks = pan_ids[None] == segment_ids[:, None, None]
    return masks_to_instances(tuple(pan_ids.shape), classes, masks)


def segments_to_category_map(pan_ids, segments_info, ignore_label):
    """The semantic label map of a panoptic id map (VOID and unknown ids: ``ignore_label``).

    Args:
        pan_ids (np.ndarray): ``[H, W]`` segment ids.
        segments_info (list[dict]): with ``id`` and ``category_id``.
        ignore_label (int): the label of unlabelled pixels.

    Returns:
        np.ndarray: ``[H, W]`` float64 class ids.
    """
    categories = {segment["id"]: segment["category_id"] for segment in segments_info}
    ids, inverse = np.unique(pan_ids, return_inverse=True)
    category_of_id = np.array([categories.get(i, ignore_label) for i in ids], dtype=np.float64)
    return category_of_id[inverse].reshape(pan_ids.shape)


def _transform_polygons(polygons, transforms, original_size, output_size):
    # Moving the corners is exact for the usual transforms (resize, crop, pad, flip); corners that
    # end outside the image are clipped when the polygon is drawn.
    points = [
        transforms.apply_coords(np.asarray(p, dtype=np.float64).reshape(-1, 2)).reshape(-1)
        for p in polygons
    ]
    return polygons_to_bitmask(points, *output_size)


def _transform_rle(rle, transforms, original_size, output_size):
    if isinstance(rle["counts"], list):  # uncompressed RLE
        rle = mask_util.frPyObjects(rle, *original_size)
    return _transform_array(mask_util.decode(rle), transforms, original_size, output_size)


def _transform_array(mask, transforms, original_size, output_size):
    if mask.shape != tuple(original_size):
        raise ValueError(f"mask of shape {mask.shape}, but the image is {tuple(original_size)}")
    return transforms.apply_segmentation(mask.astype(np.uint8)).astype(bool)


# How each form of COCO-style "segmentation" is transformed into a bool [H, W] mask.
_SEGMENTATION_TRANSFORMS = {
    list: _transform_polygons,
    dict: _transform_rle,
    np.ndarray: _transform_array,
}


def transform_segmentation(segmentation, transforms, original_size, output_size, source):
    """The bool mask, after ``transforms``, of a polygon list, a COCO RLE dict or a 2-D array.

    Args:
        segmentation: an annotation's ``segmentation``, in the original image's coordinates.
        transforms (TransformList): the transforms applied to the image.
        original_size, output_size (tuple[int, int]): (H, W) before and after ``transforms``.
        source (str): the image file, named in errors.

    Returns:
        np.ndarray: bool ``output_size``.
    """
    transform = _SEGMENTATION_TRANSFORMS.get(type(segmentation))
    if transform is None:
        raise ValueError(
            f"{source}: cannot turn a segmentation of type {type(segmentation).__name__} into a "
            "mask; expected polygons (list), COCO RLE (dict) or a 2-D array"
        )
    try:
        return transform(segmentation, transforms, original_size, output_size)
    except ValueError as e:
        raise ValueError(f"{source}: bad segmentation: {e}") from e


def annotations_to_masks(annotations, transforms, original_size, output_size, num_classes, source):
    """The classes and transformed masks of COCO-style instance annotations (crowd ones skipped).

    Args:
        annotations (list[dict]): with ``category_id`` (contiguous) and ``segmentation``
            (polygons, RLE or a 2-D array) in the original image's coordinates.
        transforms (TransformList): the transforms applied to the image.
        original_size, output_size (tuple[int, int]): (H, W) of the image before and after
            ``transforms``.
        num_classes (int): number of classes, to check the category ids.
        source (str): the image file, named in errors.

    Returns:
        tuple[Tensor, Tensor]: classes int64 ``[N]`` and masks bool ``[N, H, W]``.
    """
    annotations = [a for a in annotations if not a.get("iscrowd", 0)]
    classes = [int(a["category_id"]) for a in annotations]
    check_class_ids(classes, num_classes, f"annotations of {source}")
    masks = [
        transform_segmentation(
            a.get("segmentation"), transforms, original_size, output_size, source
        )
        for a in annotations
    ]
    if not masks:
        return torch.zeros(0, dtype=torch.int64), torch.zeros((0, *output_size), dtype=torch.bool)
    return torch.tensor(classes, dtype=torch.int64), torch.from_numpy(np.stack(masks))


def read_panoptic_labels(dataset_dict, image_shape, num_classes, ignore_label, mapper_name):
    """The panoptic labels of a dataset dict, checked.

    Args:
        dataset_dict (dict): with ``pan_seg_file_name``, ``segments_info`` (contiguous
            ``category_id``) and optionally ``sem_seg_file_name``.
        image_shape (tuple): shape of the image.
        num_classes (int): number of classes.
        ignore_label (int): the label of unlabelled pixels in the semantic map.
        mapper_name (str): named in errors.

    Returns:
        tuple: ``pan_ids`` float64 ``[H, W]``, ``segments_info``, and ``sem_seg`` float64
        ``[H, W]`` or None where the dict has no semantic map.
    """
    pan_file = require_key(dataset_dict, "pan_seg_file_name", mapper_name)
    segments_info = require_key(dataset_dict, "segments_info", mapper_name)
    check_class_ids(
        [s["category_id"] for s in segments_info], num_classes, f"segments_info of {pan_file}"
    )
    pan_ids = read_panoptic_ids(pan_file, image_shape)
    sem_seg_file = dataset_dict.get("sem_seg_file_name")
    if sem_seg_file is None:
        return pan_ids, segments_info, None
    sem_seg = read_label_map(sem_seg_file, image_shape)
    check_class_ids(sem_seg, num_classes, sem_seg_file, ignore_label)
    return pan_ids, segments_info, sem_seg
