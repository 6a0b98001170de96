"""Your own datasets, described by a small YAML (or JSON) file and registered without code.

A description file names the dataset, its format and the files of each split::

    name: shapes                     # splits are registered as "shapes_<split>"
    format: coco_panoptic            # semantic | coco_instance | coco_panoptic
    splits:
      train:
        images: images/train
        panoptic_json: annotations/panoptic_train.json
        panoptic_root: panoptic/train
        semantic: semantic/train     # optional: semantic labels named like the panoptic PNGs
        instances_json: annotations/instances_train.json  # optional: for mask AP
      val: {...}

Relative paths are relative to the description file's folder. The keys of each format are in
:data:`FORMATS`; ``classes`` (semantic only), ``ignore_label``, ``image_ext`` and ``label_ext``
are optional top-level keys. The classes of the COCO formats are read from the json files, in
increasing category id order. Registration reads only the description and the jsons' categories;
the images and labels are read when a split is loaded (``tools/check_dataset.py`` checks them all).
"""

import argparse
import json
import os
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Dict, List, Sequence, Tuple

import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.colormap import colormap

from ...errors import DatasetDescriptionError
from .loaders import load_coco_instances
from .registration import panoptic_metadata, register_panoptic, register_sem_seg, replace_dataset

__all__ = [
    "FORMATS",
    "DatasetDescription",
    "DatasetDescriptionError",
    "check_config",
    "config_overrides",
    "load_dataset_description",
    "register_dataset_description",
    "register_dataset_descriptions",
]

_TOP_LEVEL_KEYS = {"name", "format", "splits", "classes", "ignore_label", "image_ext", "label_ext"}
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Metadata key that marks a split registered from a description file (its path).
DESCRIPTION_KEY = "description_file"


@dataclass
class DatasetDescription:
    """
    A parsed description file.

    Attributes:
        file: path of the description file.
        name: dataset name; split ``s`` is registered as ``f"{name}_{s}"``.
        format: a key of :data:`FORMATS`.
        splits: split -> {key -> absolute path}.
        classes: in contiguous-id order, dicts with "id" (dataset id), "name", "isthing" and "color".
        ignore_label: value of unlabelled pixels in semantic labels.
        image_ext, label_ext: file extensions of the images and semantic labels (semantic format).
    """

    file: str
    name: str
    format: str
    splits: Dict[str, Dict[str, str]]
    classes: List[Dict] = field(default_factory=list)
    ignore_label: int = 255
    image_ext: str = "jpg"
    label_ext: str = "png"

    def dataset_name(self, split: str) -> str:
        return f"{self.name}_{split}"

    @property
    def num_classes(self) -> int:
        """The value ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` must have."""
        return len(self.classes)


@dataclass(frozen=True)
class DatasetFormat:
    """
    What a description ``format`` means.

    Attributes:
        required, optional: the path keys of each split.
        register: ``register(description, dataset_name, paths)`` registers one split.
        mappers: the ``INPUT.DATASET_MAPPER_NAME`` values that can train on it (the first is the
            suggested one).
        outputs_off: the ``MODEL.MASK_FORMER.TEST`` outputs that must be off (no thing classes).
    """

    required: Tuple[str, ...]
    optional: Tuple[str, ...]
    register: Callable[[DatasetDescription, str, Dict[str, str]], None]
    mappers: Tuple[str, ...]
    outputs_off: Tuple[str, ...] = ()


def _error(file: str, message: str) -> DatasetDescriptionError:
    return DatasetDescriptionError(f"dataset description {file}: {message}")


# ---------------------------------------------------------------------------------------------
# Classes.


def _palette_color(index: int) -> List[int]:
    palette = colormap(rgb=True, maximum=255)
    return [int(c) for c in palette[index % len(palette)]]


def _semantic_classes(file: str, classes) -> List[Dict]:
    """``classes`` of a semantic description: names, or dicts with "name" and optional "color"."""
    if not isinstance(classes, list) or not classes:
        raise _error(file, "key 'classes' must be a non-empty list of class names (format semantic)")
    parsed = []
    for index, entry in enumerate(classes):
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _error(file, f"classes[{index}] must be a name or a mapping with a 'name'; got {entry!r}")
        color = entry.get("color", _palette_color(index))
        parsed.append({"id": index, "name": entry["name"], "isthing": 0, "color": list(color)})
    _require_unique_names(file, "classes", parsed)
    return parsed


def _require_unique_names(description_file: str, where: str, classes: List[Dict]) -> None:
    seen = set()
    for cat in classes:
        if cat["name"] in seen:
            raise _error(description_file, f"{where}: class name {cat['name']!r} appears twice")
        seen.add(cat["name"])


def _read_json(description_file: str, path: str, key: str) -> Dict:
    if not os.path.isfile(path):
        raise _error(description_file, f"{key} {path} does not exist")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise _error(description_file, f"{key} {path} is not a readable json file: {e}") from e


def _json_categories(description_file: str, path: str, key: str, *, panoptic: bool) -> List[Dict]:
    """The categories of a COCO json, sorted by id, with "isthing" and "color" filled in."""
    content = _read_json(description_file, path, key)
    categories = content.get("categories") if isinstance(content, dict) else None
    if not isinstance(categories, list) or not categories:
        raise _error(description_file, f"{key} {path} has no 'categories' list")
    parsed = []
    for index, cat in enumerate(sorted(categories, key=lambda c: c.get("id", -1))):
        if not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            raise _error(description_file, f"{path}: category {cat!r} needs an integer 'id' and a 'name'")
        if panoptic and "isthing" not in cat:
            raise _error(description_file, f"{path}: category {cat['id']} ({cat['name']}) has no 'isthing'")
        color = cat.get("color", _palette_color(index))
        parsed.append({"id": cat["id"], "name": cat["name"], "isthing": int(cat.get("isthing", 1)), "color": color})
    ids = [cat["id"] for cat in parsed]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise _error(description_file, f"{path}: category ids {duplicates} appear more than once")
    _require_unique_names(description_file, f"{path} categories", parsed)
    return parsed


def _same_classes_in_every_split(description: DatasetDescription, key: str, panoptic: bool) -> List[Dict]:
    """The categories of the ``key`` json of every split, which must all be the same."""
    by_split = {
        split: _json_categories(description.file, paths[key], f"splits.{split}.{key}", panoptic=panoptic)
        for split, paths in description.splits.items()
    }
    (first_split, first), *others = by_split.items()
    for split, categories in others:
        if [(c["id"], c["name"]) for c in categories] != [(c["id"], c["name"]) for c in first]:
            raise _error(
                description.file,
                f"the categories of splits.{split}.{key} differ from those of splits.{first_split}.{key}; "
                "every split must list the same categories",
            )
    return first


# ---------------------------------------------------------------------------------------------
# Registration of one split, per format.


def _register_semantic(description: DatasetDescription, name: str, paths: Dict[str, str]) -> None:
    register_sem_seg(
        name,
        image_root=paths["images"],
        sem_seg_root=paths["semantic"],
        gt_ext=description.label_ext,
        image_ext=description.image_ext,
        ignore_label=description.ignore_label,
        stuff_classes=[c["name"] for c in description.classes],
        stuff_colors=[c["color"] for c in description.classes],
    )


def _register_coco_instance(description: DatasetDescription, name: str, paths: Dict[str, str]) -> None:
    replace_dataset(name, partial(load_coco_instances, paths["instances_json"], paths["images"], name))
    MetadataCatalog.get(name).set(
        json_file=paths["instances_json"],
        image_root=paths["images"],
        evaluator_type="coco",
        thing_classes=[c["name"] for c in description.classes],
        thing_colors=[c["color"] for c in description.classes],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(description.classes)},
    )


def _register_coco_panoptic(description: DatasetDescription, name: str, paths: Dict[str, str]) -> None:
    register_panoptic(
        name,
        panoptic_metadata(description.classes),
        image_root=paths["images"],
        panoptic_root=paths["panoptic_root"],
        panoptic_json=paths["panoptic_json"],
        sem_seg_root=paths.get("semantic"),
        instances_json=paths.get("instances_json"),
        evaluator_type="coco_panoptic_seg",
        ignore_label=description.ignore_label,
    )


FORMATS: Dict[str, DatasetFormat] = {
    "semantic": DatasetFormat(
        required=("images", "semantic"),
        optional=(),
        register=_register_semantic,
        mappers=("mask_former_semantic",),
        outputs_off=("PANOPTIC_ON", "INSTANCE_ON"),
    ),
    "coco_instance": DatasetFormat(
        required=("images", "instances_json"),
        optional=(),
        register=_register_coco_instance,
        mappers=("mask_former_instance", "coco_instance_lsj"),
    ),
    "coco_panoptic": DatasetFormat(
        required=("images", "panoptic_json", "panoptic_root"),
        optional=("semantic", "instances_json"),
        register=_register_coco_panoptic,
        mappers=("mask_former_panoptic", "coco_panoptic_lsj"),
    ),
}
"""``format`` of a description file -> its split keys, registration and the mappers that fit it."""

# Where the classes of each format come from: description -> classes.
_CLASS_SOURCES: Dict[str, Callable[[DatasetDescription, Dict], List[Dict]]] = {
    "semantic": lambda d, raw: _semantic_classes(d.file, raw.get("classes")),
    "coco_instance": lambda d, raw: _same_classes_in_every_split(d, "instances_json", panoptic=False),
    "coco_panoptic": lambda d, raw: _same_classes_in_every_split(d, "panoptic_json", panoptic=True),
}


# ---------------------------------------------------------------------------------------------
# Parsing.


def _read_description_file(path: str) -> Dict:
    if not os.path.isfile(path):
        raise DatasetDescriptionError(f"dataset description {path} does not exist")
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise _error(path, f"cannot be parsed: {e}") from e
    if not isinstance(raw, dict):
        raise _error(path, "must be a mapping with the keys 'name', 'format' and 'splits'")
    unknown = sorted(set(raw) - _TOP_LEVEL_KEYS)
    if unknown:
        raise _error(path, f"unknown keys {unknown}; known keys: {sorted(_TOP_LEVEL_KEYS)}")
    for key in ("name", "format", "splits"):
        if key not in raw:
            raise _error(path, f"missing key {key!r}")
    return raw


def _split_paths(file: str, dataset_format: DatasetFormat, splits) -> Dict[str, Dict[str, str]]:
    if not isinstance(splits, dict) or not splits:
        raise _error(file, "'splits' must map split names (e.g. train, val) to their paths")
    folder = os.path.dirname(os.path.abspath(file))
    parsed = {}
    for split, paths in splits.items():
        if not isinstance(paths, dict):
            raise _error(file, f"splits.{split} must map keys {list(dataset_format.required)} to paths")
        missing = [key for key in dataset_format.required if key not in paths]
        unknown = sorted(set(paths) - set(dataset_format.required) - set(dataset_format.optional))
        if missing or unknown:
            raise _error(
                file,
                f"splits.{split}: missing keys {missing}, unknown keys {unknown}; this format takes "
                f"{list(dataset_format.required)} and optionally {list(dataset_format.optional)}",
            )
        parsed[str(split)] = {
            key: os.path.join(folder, os.path.expanduser(str(value))) for key, value in paths.items()
        }
    return parsed


def load_dataset_description(path: str) -> DatasetDescription:
    """
    Parse and check a dataset description file (see the module docstring).

    Raises:
        DatasetDescriptionError: naming the file and the key that is missing, unknown or wrong,
            or the json whose categories are missing, duplicated or differ between splits.
    """
    raw = _read_description_file(path)
    name, format_name = raw["name"], raw["format"]
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise _error(path, f"'name' must be letters, digits, '_', '.' or '-'; got {name!r}")
    if format_name not in FORMATS:
        raise _error(path, f"'format' is {format_name!r}; choose one of {sorted(FORMATS)}")
    if "classes" in raw and format_name != "semantic":
        raise _error(path, f"'classes' is for format semantic; format {format_name} reads them from the json")
    ignore_label = raw.get("ignore_label", 255)
    if not isinstance(ignore_label, int) or isinstance(ignore_label, bool):
        raise _error(path, f"'ignore_label' must be an integer; got {ignore_label!r}")
    description = DatasetDescription(
        file=path,
        name=name,
        format=format_name,
        splits=_split_paths(path, FORMATS[format_name], raw["splits"]),
        ignore_label=ignore_label,
        image_ext=str(raw.get("image_ext", "jpg")).lstrip("."),
        label_ext=str(raw.get("label_ext", "png")).lstrip("."),
    )
    description.classes = _CLASS_SOURCES[format_name](description, raw)
    return description


# ---------------------------------------------------------------------------------------------
# Registration and the config checks.


def register_dataset_description(path: str) -> DatasetDescription:
    """
    Register every split of a description file as ``<name>_<split>`` (replacing an earlier
    registration of the same names), with the metadata detectron2's evaluators and this project's
    mappers and model read.

    Returns:
        The parsed description.
    """
    description = load_dataset_description(path)
    for split, paths in description.splits.items():
        name = description.dataset_name(split)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        FORMATS[description.format].register(description, name, paths)
        MetadataCatalog.get(name).set(
            **{DESCRIPTION_KEY: os.path.abspath(path), "description_format": description.format}
        )
    return description


def add_dataset_flag(parser: argparse.ArgumentParser) -> None:
    """The ``--dataset FILE`` option of the command-line tools, for :func:`register_dataset_descriptions`."""
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="FILE",
        help="dataset description file whose splits are registered as <name>_<split> (may be repeated)",
    )


def register_dataset_descriptions(paths: Sequence[str]) -> List[DatasetDescription]:
    """:func:`register_dataset_description` of each file, e.g. of train_net's ``--dataset`` options."""
    return [register_dataset_description(path) for path in paths]


def config_overrides(description: DatasetDescription, train_split: str = "train", test_split: str = "val") -> List[str]:
    """The ``KEY VALUE`` command-line overrides that train and evaluate a config on the dataset."""
    dataset_format = FORMATS[description.format]
    overrides = [
        "DATASETS.TRAIN", f"('{description.dataset_name(train_split)}',)",
        "DATASETS.TEST", f"('{description.dataset_name(test_split)}',)",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(description.num_classes),
        "INPUT.DATASET_MAPPER_NAME", dataset_format.mappers[0],
    ]
    for output in dataset_format.outputs_off:
        overrides += [f"MODEL.MASK_FORMER.TEST.{output}", "False"]
    return overrides


def _num_classes_of(metadata) -> int:
    is_instance = metadata.get("description_format") == "coco_instance"
    return len(metadata.thing_classes if is_instance else metadata.stuff_classes)


def check_config(cfg) -> None:
    """
    Check a config against the datasets it names in ``DATASETS.TRAIN`` / ``TEST``. Each must be
    registered; for those registered from a description file, ``MODEL.SEM_SEG_HEAD.NUM_CLASSES``
    must be their number of classes, ``INPUT.DATASET_MAPPER_NAME`` must fit the training datasets'
    format, and semantic datasets (no thing classes) cannot be evaluated with panoptic or instance
    outputs on.

    Raises:
        DatasetDescriptionError: naming the config key, the dataset and its description file.
    """
    for role in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[role]:
            if name not in DatasetCatalog.list():
                raise DatasetDescriptionError(
                    f"DATASETS.{role} names {name!r}, which is not a registered dataset: pass the description "
                    "file that defines it with --dataset FILE (see datasets/README.md for the built-in ones)"
                )
            metadata = MetadataCatalog.get(name)
            if metadata.get(DESCRIPTION_KEY) is None:
                continue
            source = f"dataset {name!r} (DATASETS.{role}, described by {metadata.get(DESCRIPTION_KEY)})"
            num_classes = _num_classes_of(metadata)
            if cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES != num_classes:
                raise DatasetDescriptionError(
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES} but {source} has "
                    f"{num_classes} classes: set MODEL.SEM_SEG_HEAD.NUM_CLASSES {num_classes}"
                )
            dataset_format = FORMATS[metadata.description_format]
            mappers = dataset_format.mappers + (("mask_former_semantic",) if metadata.get("sem_seg_root") else ())
            if role == "TRAIN" and cfg.INPUT.DATASET_MAPPER_NAME not in mappers:
                raise DatasetDescriptionError(
                    f"INPUT.DATASET_MAPPER_NAME is {cfg.INPUT.DATASET_MAPPER_NAME!r} but {source} is in format "
                    f"{metadata.description_format}, which trains with one of {list(mappers)}"
                )
            for output in dataset_format.outputs_off:
                if cfg.MODEL.MASK_FORMER.TEST[output]:
                    raise DatasetDescriptionError(
                        f"MODEL.MASK_FORMER.TEST.{output} is on but {source} is in format "
                        f"{metadata.description_format} and has no thing classes: set it to False"
                    )
