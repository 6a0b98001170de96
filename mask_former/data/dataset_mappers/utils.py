"""Pieces shared by the dataset mappers: reading and checking files, padding, building targets."""
import numpy as np
import pycocotools.mask as mask_util
import torch
from panopticapi.utils import rgb2id

from detectron2.data import MetadataCatalog, detection_utils
from detectron2.structures import Instances, polygons_to_bitmask
from detectron2.utils.file_io import PathManager

from ...errors import DatasetFileError

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


def read_panoptic_png(file_name, image_shape):
    """Read a COCO-format panoptic PNG, checking its size against the image's.

    Returns:
        np.ndarray: uint8 ``[H, W, 3]`` RGB. Transforms resample it as an image (PIL nearest), as
        upstream does; :func:`panoptic_ids` then gives the segment ids.
    """
    rgb = read_image_file(file_name, "RGB")
    _check_same_size(rgb, image_shape, file_name)
    return rgb


def panoptic_ids(rgb):
    """Segment ids (R + 256 G + 256^2 B; 0 is VOID) of a panoptic PNG, int64 ``[H, W]``."""
    return rgb2id(rgb).astype(np.int64)


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


def _pad_to_fixed_size(tensor, size, value):
    # Upstream's F.pad(tensor, [0, size - W, 0, size - H]): a negative amount cuts.
    height, width = tensor.shape[-2:]
    padded = tensor.new_full((*tensor.shape[:-2], size, size), value)
    padded[..., : min(height, size), : min(width, size)] = tensor[..., :size, :size]
    return padded


def _pad_to_multiple(tensor, size_divisibility, value):
    height, width = tensor.shape[-2:]
    padded_height = -(-height // size_divisibility) * size_divisibility
    padded_width = -(-width // size_divisibility) * size_divisibility
    padded = tensor.new_full((*tensor.shape[:-2], padded_height, padded_width), value)
    padded[..., :height, :width] = tensor
    return padded


# The ways to pad to cfg.INPUT.SIZE_DIVISIBILITY, named by cfg.INPUT.SIZE_DIVISIBILITY_PADDING.
PADDINGS = {"fixed": _pad_to_fixed_size, "multiple": _pad_to_multiple}


def check_padding(padding):
    """Raise a ValueError naming the config key unless ``padding`` is a key of :data:`PADDINGS`."""
    if padding not in PADDINGS:
        raise ValueError(
            f"INPUT.SIZE_DIVISIBILITY_PADDING={padding!r} is not one of {sorted(PADDINGS)}"
        )


def pad_to_divisibility(tensor, size_divisibility, value, padding="fixed"):
    """Pad the last two (spatial) dims at the bottom and right (no padding if
    ``size_divisibility`` <= 0).

    Args:
        tensor (Tensor): ``[..., H, W]``.
        size_divisibility (int): ``cfg.INPUT.SIZE_DIVISIBILITY``.
        value: the fill value.
        padding (str): "fixed" (upstream): to exactly ``size_divisibility`` on both sides, cutting
            a larger tensor as upstream does (the upstream configs crop to that size first);
            "multiple": up to the next multiples of ``size_divisibility``, never cutting.

    Returns:
        Tensor: ``[..., H', W']``, same dtype.
    """
    check_padding(padding)
    if size_divisibility <= 0:
        return tensor
    return PADDINGS[padding](tensor, size_divisibility, value)


def padding_mask(transforms, image_shape):
    """Where ``transforms`` padded the image, whatever value detectron2 pads label maps with (0 in
    v0.6, 255 in later versions): the pixels where a map of zeros and one of ones agree.

    Args:
        transforms (TransformList): the transforms applied to the image.
        image_shape (tuple): shape of the image before ``transforms``.

    Returns:
        np.ndarray: bool ``[H', W']``, True on the padding.
    """
    zeros = np.zeros(image_shape[:2], dtype=np.uint8)
    return transforms.apply_segmentation(zeros) == transforms.apply_segmentation(zeros + 1)


def masks_to_instances(image_size, classes, masks, drop_empty=False):
    """Training targets from per-segment masks.

    Args:
        image_size (tuple[int, int]): (H, W).
        classes (Tensor): int64 ``[N]``.
        masks (Tensor): bool ``[N, H, W]``.
        drop_empty (bool): drop the targets whose mask has no pixel (e.g. cropped away), so that
            no class is taught that the image does not show (``INPUT.DROP_EMPTY_TARGETS``);
            upstream keeps them.

    Returns:
        Instances: ``gt_classes`` int64 ``[M]`` and ``gt_masks`` bool ``[M, H, W]``, M <= N.
    """
    instances = Instances(image_size)
    instances.gt_classes = classes
    instances.gt_masks = masks
    if drop_empty:
        instances = instances[masks.flatten(1).any(dim=1)]
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


def segments_to_instances(pan_ids, segments_info, drop_empty=False):
    """One target mask per non-crowd segment of a panoptic id map.

    Args:
        pan_ids (Tensor): int64 ``[H, W]`` segment ids.
        segments_info (list[dict]): with ``id``, ``category_id`` (contiguous) and ``iscrowd``.
        drop_empty (bool): as in :func:`masks_to_instances`.

    Returns:
        Instances: ``gt_classes`` int64 ``[N]`` and ``gt_masks`` bool ``[N, H, W]``.
    """
    segments = [s for s in segments_info if not s.get("iscrowd", 0)]
    classes = torch.tensor([s["category_id"] for s in segments], dtype=torch.int64)
    segment_ids = torch.tensor([s["id"] for s in segments], dtype=torch.int64)
    masks = pan_ids[None] == segment_ids[:, None, None]
    return masks_to_instances(tuple(pan_ids.shape), classes, masks, drop_empty)


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


def _move_polygon_corners(polygons, transforms, output_size):
    # Exact for the usual transforms (resize, crop, pad, flip); corners that end outside the image
    # are clipped when the polygon is drawn.
    points = [
        transforms.apply_coords(np.asarray(p, dtype=np.float64).reshape(-1, 2)).reshape(-1)
        for p in polygons
    ]
    mask = polygons_to_bitmask(points, *output_size)
    return mask, mask.any()


def _cut_polygons(polygons, transforms, output_size):
    # As detectron2's transform_instance_annotations: crops cut the polygons with shapely, and
    # those with nothing left (or a box thinner than 1e-5, in float32) are gone.
    try:
        cut = transforms.apply_polygons([np.asarray(p).reshape(-1, 2) for p in polygons])
    except ModuleNotFoundError as e:
        if e.name != "shapely":
            raise
        raise ModuleNotFoundError(
            "Cutting polygons at the crop as upstream does (INPUT.CROP_POLYGONS_WITH_SHAPELY "
            "True) needs the 'shapely' package: pip install shapely, or set the key to False",
            name="shapely",
        ) from e
    mask = polygons_to_bitmask([p.reshape(-1) for p in cut], *output_size)
    if not cut:
        return mask, False
    points = np.concatenate(cut).astype(np.float32)
    return mask, bool((points.max(0) - points.min(0) > 1e-5).all())


def _transform_polygons(polygons, transforms, original_size, output_size, cut_polygons):
    if cut_polygons:
        return _cut_polygons(polygons, transforms, output_size)
    return _move_polygon_corners(polygons, transforms, output_size)


def _transform_rle(rle, transforms, original_size, output_size, cut_polygons):
    if isinstance(rle["counts"], list):  # uncompressed RLE
        rle = mask_util.frPyObjects(rle, *original_size)
    return _transform_array(
        mask_util.decode(rle), transforms, original_size, output_size, cut_polygons
    )


def _transform_array(mask, transforms, original_size, output_size, cut_polygons):
    if mask.shape != tuple(original_size):
        raise ValueError(f"mask of shape {mask.shape}, but the image is {tuple(original_size)}")
    # "== 1": whatever detectron2 pads label maps with (0 in v0.6, 255 later) is background.
    mask = transforms.apply_segmentation(mask.astype(np.uint8)) == 1
    return mask, mask.any()


# How each form of COCO-style "segmentation" is transformed into a bool [H, W] mask.
_SEGMENTATION_TRANSFORMS = {
    list: _transform_polygons,
    dict: _transform_rle,
    np.ndarray: _transform_array,
}


def transform_segmentation(
    segmentation, transforms, original_size, output_size, source, cut_polygons=True
):
    """The bool mask, after ``transforms``, of a polygon list, a COCO RLE dict or a 2-D array.

    Args:
        segmentation: an annotation's ``segmentation``, in the original image's coordinates.
        transforms (TransformList): the transforms applied to the image.
        original_size, output_size (tuple[int, int]): (H, W) before and after ``transforms``.
        source (str): the image file, named in errors.
        cut_polygons (bool): cut polygons at the crop with shapely, as upstream (detectron2's
            ``transform_instance_annotations``); False moves their corners only (no shapely; the
            mask can differ from upstream's by a few pixels along the crop's border).

    Returns:
        tuple[np.ndarray, bool]: the bool mask of ``output_size``, and whether the object is still
        there: for cut polygons, as upstream's ``filter_empty_instances`` decides (something left
        of the polygons, with a box of nonzero size), else whether the mask has a pixel.
    """
    transform = _SEGMENTATION_TRANSFORMS.get(type(segmentation))
    if transform is None:
        raise ValueError(
            f"{source}: cannot turn a segmentation of type {type(segmentation).__name__} into a "
            "mask; expected polygons (list), COCO RLE (dict) or a 2-D array"
        )
    try:
        return transform(segmentation, transforms, original_size, output_size, cut_polygons)
    except ValueError as e:
        raise ValueError(f"{source}: bad segmentation: {e}") from e


def annotations_to_masks(
    annotations, transforms, original_size, output_size, num_classes, source, cut_polygons=True
):
    """The classes and transformed masks of COCO-style instance annotations (crowd ones skipped).

    Args:
        annotations (list[dict]): with ``category_id`` (contiguous) and ``segmentation``
            (polygons, RLE or a 2-D array) in the original image's coordinates.
        transforms (TransformList): the transforms applied to the image.
        original_size, output_size (tuple[int, int]): (H, W) of the image before and after
            ``transforms``.
        num_classes (int): number of classes, to check the category ids.
        source (str): the image file, named in errors.
        cut_polygons (bool): as in :func:`transform_segmentation`.

    Returns:
        tuple[Tensor, Tensor, Tensor]: classes int64 ``[N]``, masks bool ``[N, H, W]`` and
        whether each object is still there after ``transforms`` (bool ``[N]``, see
        :func:`transform_segmentation`).
    """
    annotations = [a for a in annotations if not a.get("iscrowd", 0)]
    classes = [int(a["category_id"]) for a in annotations]
    check_class_ids(classes, num_classes, f"annotations of {source}")
    transformed = [
        transform_segmentation(
            a.get("segmentation"), transforms, original_size, output_size, source, cut_polygons
        )
        for a in annotations
    ]
    if not transformed:
        empty_masks = torch.zeros((0, *output_size), dtype=torch.bool)
        return torch.zeros(0, dtype=torch.int64), empty_masks, torch.zeros(0, dtype=torch.bool)
    masks, visible = zip(*transformed)
    return (
        torch.tensor(classes, dtype=torch.int64),
        torch.from_numpy(np.stack(masks)),
        torch.tensor(visible, dtype=torch.bool),
    )


def read_panoptic_segments(dataset_dict, image_shape, num_classes, mapper_name):
    """The panoptic PNG and segments of a dataset dict, checked.

    Args:
        dataset_dict (dict): with ``pan_seg_file_name`` and ``segments_info`` (contiguous
            ``category_id``).
        image_shape (tuple): shape of the image.
        num_classes (int): number of classes.
        mapper_name (str): named in errors.

    Returns:
        tuple: ``pan_rgb`` uint8 ``[H, W, 3]`` (see :func:`read_panoptic_png`) and
        ``segments_info``.
    """
    pan_file = require_key(dataset_dict, "pan_seg_file_name", mapper_name)
    segments_info = require_key(dataset_dict, "segments_info", mapper_name)
    check_class_ids(
        [s["category_id"] for s in segments_info], num_classes, f"segments_info of {pan_file}"
    )
    return read_panoptic_png(pan_file, image_shape), segments_info


def read_panoptic_labels(dataset_dict, image_shape, num_classes, ignore_label, mapper_name):
    """The panoptic labels of a dataset dict and its semantic map where it has one, checked.

    Args:
        dataset_dict (dict): as in :func:`read_panoptic_segments`, optionally with
            ``sem_seg_file_name``.
        image_shape, num_classes, mapper_name: as in :func:`read_panoptic_segments`.
        ignore_label (int): the label of unlabelled pixels in the semantic map.

    Returns:
        tuple: ``pan_rgb``, ``segments_info`` (as :func:`read_panoptic_segments`) and ``sem_seg``
        float64 ``[H, W]`` or None where the dict has no semantic map.
    """
    pan_rgb, segments_info = read_panoptic_segments(
        dataset_dict, image_shape, num_classes, mapper_name
    )
    sem_seg_file = dataset_dict.get("sem_seg_file_name")
    if sem_seg_file is None:
        return pan_rgb, segments_info, None
    sem_seg = read_label_map(sem_seg_file, image_shape)
    check_class_ids(sem_seg, num_classes, sem_seg_file, ignore_label)
    return pan_rgb, segments_info, sem_seg
