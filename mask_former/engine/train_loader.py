"""A training data loader whose stream of batches is a function of (seed, iteration) only.

detectron2's training loader is an infinite seeded stream that restarts from its beginning when a
run is resumed, and its augmentations draw from each worker's global random state. Here the
stream is built so that resuming is exact and the data do not depend on the number of processes
or data-loading workers:

- the order of the images (shuffled epochs, as detectron2's training samplers) and their grouping
  into global batches of ``SOLVER.IMS_PER_BATCH`` images (by aspect ratio, as
  ``AspectRatioGroupedDataset``) is computed on dataset indices only, so skipping the batches of
  the iterations already done costs no image loading;
- process ``r`` of ``W`` takes the ``r``-th slice of each global batch;
- the augmentations of the image at position ``j`` of the global batch of iteration ``i`` run
  with the random generators seeded by ``derive_seed(seed, i, j)``.

With loader workers, each batch crosses from its worker to the training process packed (see
:func:`pack_batch`): its tensors in one shared-memory buffer instead of one each, each of which
costs the training process a round trip to the worker for its file descriptor.
"""
import io
import logging
import pickle
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset, Sampler

from .rng import derive_seed, isolated_rngs

__all__ = [
    "EPOCH_ORDERS",
    "IterationBatchSampler",
    "IterationDataLoader",
    "PackedBatch",
    "SeededMapDataset",
    "build_train_loader",
    "pack_batch",
    "unpack_batch",
]

EpochOrder = Callable[[torch.Generator], torch.Tensor]
"""Returns the dataset indices of one epoch, in the order they are used, drawn from the generator."""

# A mapper returning None for an image (e.g. no annotation left after cropping) is retried on
# another image, as detectron2's MapDataset does, at most this many times.
MAX_MAPPER_RETRIES = 100


def _shuffled_epochs(cfg, dataset_dicts: List[Dict]) -> EpochOrder:
    size = len(dataset_dicts)
    return lambda generator: torch.randperm(size, generator=generator)


def _repeat_factor_epochs(cfg, dataset_dicts: List[Dict]) -> EpochOrder:
    """Images repeated by their LVIS-style repeat factor, stochastically rounded per epoch."""
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
        dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
    )
    whole, fraction = torch.trunc(factors), factors - torch.trunc(factors)

    def epoch(generator: torch.Generator) -> torch.Tensor:
        repeats = whole + (torch.rand(len(fraction), generator=generator) < fraction).float()
        indices = torch.repeat_interleave(torch.arange(len(factors)), repeats.long())
        return indices[torch.randperm(len(indices), generator=generator)]

    return epoch


def _random_subset_epochs(cfg, dataset_dicts: List[Dict]) -> EpochOrder:
    """A random subset of ``DATALOADER.RANDOM_SUBSET_RATIO`` of the images, shuffled per epoch."""
    ratio = cfg.DATALOADER.RANDOM_SUBSET_RATIO
    size = int(len(dataset_dicts) * ratio)
    if size == 0:
        raise ValueError(f"DATALOADER.RANDOM_SUBSET_RATIO={ratio} selects no image of {len(dataset_dicts)}")
    subset_generator = torch.Generator().manual_seed(cfg.SEED if cfg.SEED >= 0 else 0)
    subset = torch.randperm(len(dataset_dicts), generator=subset_generator)[:size]
    return lambda generator: subset[torch.randperm(len(subset), generator=generator)]


EPOCH_ORDERS: Dict[str, Callable[..., EpochOrder]] = {
    "TrainingSampler": _shuffled_epochs,
    "RepeatFactorTrainingSampler": _repeat_factor_epochs,
    "RandomSubsetTrainingSampler": _random_subset_epochs,
}
"""``DATALOADER.SAMPLER_TRAIN`` -> builder ``(cfg, dataset_dicts) -> EpochOrder``."""


class IterationBatchSampler(Sampler):
    """
    Infinite stream of this process's batches, one per iteration, starting at ``start_iter``.

    Each batch is a list of ``(dataset_index, sample_seed)``; see the module docstring for how the
    global batches are formed and split.
    """

    def __init__(
        self,
        *,
        epoch_order: EpochOrder,
        group_ids: Optional[Sequence[int]],
        total_batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
    ):
        """
        Args:
            epoch_order: dataset indices of one epoch, from a generator (see ``EPOCH_ORDERS``).
            group_ids: the group (e.g. landscape or portrait) of each dataset index; a global
                batch holds images of one group. None puts every image in one group.
            total_batch_size: images per iteration over all processes.
            seed: base seed of the order and of the augmentations.
            rank, world_size: this process and the number of processes.
            start_iter: the first iteration produced.
        """
        if total_batch_size % world_size != 0:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH ({total_batch_size}) must be divisible by the number of "
                f"processes ({world_size})"
            )
        self.epoch_order = epoch_order
        self.group_ids = group_ids
        self.total_batch_size = total_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter

    def global_batches(self) -> Iterator[List[int]]:
        """Dataset indices of the global batch of every iteration, from iteration 0."""
        generator = torch.Generator().manual_seed(self.seed)
        buckets = defaultdict(list)
        while True:
            for index in self.epoch_order(generator).tolist():
                bucket = buckets[0 if self.group_ids is None else self.group_ids[index]]
                bucket.append(index)
                if len(bucket) == self.total_batch_size:
                    yield bucket[:]
                    bucket.clear()

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        per_process = self.total_batch_size // self.world_size
        first = self.rank * per_process
        for iteration, batch in enumerate(self.global_batches()):
            if iteration < self.start_iter:
                continue
            positions = range(first, first + per_process)
            yield [(batch[j], derive_seed(self.seed, iteration, j)) for j in positions]


class SeededMapDataset(Dataset):
    """``dataset[(index, seed)]``: the mapped ``index``-th dataset dict, its random augmentations
    drawn with the global random generators seeded by ``seed`` (their states are restored)."""

    def __init__(self, dataset: Sequence[Dict], mapper: Callable[[Dict], Optional[Dict]]):
        self.dataset = dataset
        self.mapper = mapper

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> Dict:
        index, seed = key
        retry_rng = np.random.default_rng(seed)
        for attempt in range(MAX_MAPPER_RETRIES):
            with isolated_rngs(derive_seed(seed, attempt)):
                mapped = self.mapper(self.dataset[index])
            if mapped is not None:
                return mapped
            logging.getLogger(__name__).warning(
                f"The dataset mapper returned None for dataset index {index}; trying another image"
            )
            index = int(retry_rng.integers(len(self.dataset)))
        raise RuntimeError(
            f"The dataset mapper returned None for {MAX_MAPPER_RETRIES} images in a row; check "
            "the training dataset and the mapper's settings (e.g. the crop size)"
        )


# Byte alignment of each tensor in a packed batch's buffer (enough for any dtype, and cache lines).
PACK_ALIGNMENT = 64


@dataclass
class PackedBatch:
    """A batch as :func:`pack_batch` packs it.

    Attributes:
        skeleton: the pickled batch, each packed tensor pickled as its index in ``layout``.
        layout: ``(offset in bytes, dtype, shape)`` of each packed tensor in ``buffer``.
        buffer: uint8 ``[total bytes]``: the packed tensors' data, one after the other.
    """

    skeleton: bytes
    layout: List[Tuple[int, torch.dtype, Tuple[int, ...]]]
    buffer: torch.Tensor


def _packable(obj: Any) -> bool:
    return (
        type(obj) is torch.Tensor
        and obj.device.type == "cpu"
        and obj.layout == torch.strided
        and not (obj.requires_grad or obj.is_quantized)
    )


class _TensorCollectingPickler(pickle.Pickler):
    """Pickles an object with its plain CPU tensors left out: collected in ``tensors``, each pickled as
    its index there (a tensor met twice, once)."""

    def __init__(self, file):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors: List[torch.Tensor] = []
        self.indices: Dict[int, int] = {}  # id of a collected tensor -> its index (``tensors`` keeps it alive)

    def persistent_id(self, obj: Any) -> Optional[int]:
        if not _packable(obj):
            return None
        if id(obj) not in self.indices:
            self.indices[id(obj)] = len(self.tensors)
            self.tensors.append(obj)
        return self.indices[id(obj)]


class _PackedBatchUnpickler(pickle.Unpickler):
    def __init__(self, packed: PackedBatch):
        super().__init__(io.BytesIO(packed.skeleton))
        self.packed = packed
        self.tensors: Dict[int, torch.Tensor] = {}

    def persistent_load(self, index: int) -> torch.Tensor:
        if index not in self.tensors:
            offset, dtype, shape = self.packed.layout[index]
            size = torch.Size(shape).numel() * dtype.itemsize
            self.tensors[index] = self.packed.buffer[offset : offset + size].view(dtype).view(shape)
        return self.tensors[index]


def pack_batch(batch: Any) -> PackedBatch:
    """
    ``batch`` (any picklable structure: e.g. a list of mapped dicts with ``Instances``) with all its plain
    CPU tensors copied into one buffer. Sent between processes, a batch of ``n`` tensors otherwise takes
    ``n`` shared-memory files, each fetched by the receiver from the sender in a round trip (slow where the
    sender's threads wait for a busy CPU); packed, it takes one.
    """
    file = io.BytesIO()
    pickler = _TensorCollectingPickler(file)
    pickler.dump(batch)
    layout, end = [], 0
    for tensor in pickler.tensors:
        offset = -(-end // PACK_ALIGNMENT) * PACK_ALIGNMENT
        layout.append((offset, tensor.dtype, tuple(tensor.shape)))
        end = offset + tensor.numel() * tensor.element_size()
    buffer = torch.empty(end, dtype=torch.uint8)
    for (offset, dtype, shape), tensor in zip(layout, pickler.tensors):
        buffer[offset : offset + tensor.numel() * tensor.element_size()].view(dtype).view(shape).copy_(tensor)
    return PackedBatch(file.getvalue(), layout, buffer)


def unpack_batch(packed: PackedBatch) -> Any:
    """The batch that :func:`pack_batch` packed, its tensors views of ``packed.buffer``: equal values,
    dtypes and shapes; contiguous (whatever the packed tensors' strides were); one tensor where the
    batch held one tensor twice, but distinct tensors where it held two views of one storage."""
    return _PackedBatchUnpickler(packed).load()


class IterationDataLoader:
    """
    Iterable over this process's training batches (lists of mapped dicts), one per iteration.

    The underlying ``torch.utils.data.DataLoader`` (and its workers) is created when the iteration
    actually starts, so that a resumed trainer can first move the stream to its start iteration
    with :meth:`restart_at`.
    """

    def __init__(
        self,
        dataset: SeededMapDataset,
        batch_sampler: IterationBatchSampler,
        num_workers: int,
        *,
        pack_batches: bool = True,
    ):
        """
        Args:
            dataset, batch_sampler: the mapped dataset and the batches of its keys.
            num_workers: data-loading worker processes (0: map in this process).
            pack_batches: with workers, send each batch packed (:func:`pack_batch`); False sends it
                as ``torch.utils.data.DataLoader`` does (the plain reference of the packed path).
        """
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.pack_batches = pack_batches and num_workers > 0
        self._started = False

    def restart_at(self, start_iter: int, seed: int) -> None:
        """Make the stream start at iteration ``start_iter`` of the stream of seed ``seed``."""
        if self._started:
            raise RuntimeError("IterationDataLoader.restart_at must be called before iterating the loader")
        self.batch_sampler.start_iter = start_iter
        self.batch_sampler.seed = seed

    def __iter__(self) -> Iterator[List[Dict]]:
        self._started = True
        loader = DataLoader(
            self.dataset,
            batch_sampler=self.batch_sampler,
            num_workers=self.num_workers,
            collate_fn=pack_batch if self.pack_batches else trivial_batch_collator,
            # Its own generator: creating the iterator draws a seed, which must not come from the
            # global generator that the model uses.
            generator=torch.Generator().manual_seed(self.batch_sampler.seed),
        )
        for batch in loader:
            yield unpack_batch(batch) if self.pack_batches else batch


def _aspect_ratio_groups(dataset_dicts: List[Dict]) -> Optional[List[int]]:
    """0 for landscape, 1 for portrait images, as detectron2's AspectRatioGroupedDataset; None if
    the dataset dicts do not record the image sizes."""
    if not all("width" in d and "height" in d for d in dataset_dicts):
        return None
    return [int(d["width"] <= d["height"]) for d in dataset_dicts]


def build_train_loader(cfg, mapper: Callable[[Dict], Optional[Dict]], *, seed: int) -> IterationDataLoader:
    """
    The training loader of ``cfg.DATASETS.TRAIN`` for this process.

    Args:
        cfg: config; reads ``DATASETS.TRAIN``, ``DATALOADER.{FILTER_EMPTY_ANNOTATIONS,
            SAMPLER_TRAIN, REPEAT_THRESHOLD, RANDOM_SUBSET_RATIO, ASPECT_RATIO_GROUPING,
            NUM_WORKERS}`` and ``SOLVER.IMS_PER_BATCH`` (the total over all processes).
        mapper: maps a dataset dict to the model's input dict.
        seed: base seed of the image order and of the augmentations.
    """
    sampler_name = cfg.DATALOADER.SAMPLER_TRAIN
    if sampler_name not in EPOCH_ORDERS:
        raise ValueError(f"DATALOADER.SAMPLER_TRAIN={sampler_name!r} is not one of {sorted(EPOCH_ORDERS)}")
    dataset_dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    batch_sampler = IterationBatchSampler(
        epoch_order=EPOCH_ORDERS[sampler_name](cfg, dataset_dicts),
        group_ids=_aspect_ratio_groups(dataset_dicts) if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None,
        total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        seed=seed,
        rank=comm.get_rank(),
        world_size=comm.get_world_size(),
    )
    dataset = SeededMapDataset(DatasetFromList(dataset_dicts, copy=False), mapper)
    return IterationDataLoader(dataset, batch_sampler, cfg.DATALOADER.NUM_WORKERS)
