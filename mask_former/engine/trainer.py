"""The trainer of MaskFormer / Mask2Former: detectron2's ``DefaultTrainer`` with MaskFormer's data
mappers, optimizer, LR schedule and evaluators, CPU training, and exactly resumable runs."""
import importlib.util
import logging
import os
import weakref
from collections import OrderedDict
from typing import Dict, List, Optional

from torch import nn

from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, create_ddp_model
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation import DatasetEvaluator
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger

from ..data.dataset_mappers import build_dataset_mapper
from ..checkpoint import MaskFormerCheckpointer
from ..evaluation import build_evaluator
from .launch import uses_cuda
from .optimizer import build_optimizer
from .rng import derive_seed, seed_rngs
from .train_loader import IterationDataLoader, build_train_loader
from .tta import SemanticSegmentorWithTTA

__all__ = ["Trainer", "build_step_trainer", "training_seed"]


def training_seed(cfg) -> int:
    """``SEED``, or one random seed shared by all processes where ``SEED`` is negative."""
    return cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()


def build_step_trainer(cfg, model: nn.Module, data_loader, optimizer) -> SimpleTrainer:
    """
    detectron2's ``AMPTrainer`` where ``SOLVER.AMP.ENABLED`` on CUDA, its ``SimpleTrainer``
    otherwise. On the CPU, AMP is turned off with one warning (training runs in float32):
    ``AMPTrainer`` needs CUDA, and the CPU's bfloat16 autocast would change the numerics of upstream
    configs, which enable AMP for GPU speed.
    """
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    if uses_cuda(cfg.MODEL.DEVICE):
        return AMPTrainer(model, data_loader, optimizer)
    logging.getLogger(__name__).warning(
        "SOLVER.AMP.ENABLED is ignored on the CPU: AMP is disabled, training in float32"
    )
    return SimpleTrainer(model, data_loader, optimizer)


class Trainer(DefaultTrainer):
    """
    ``DefaultTrainer`` for MaskFormer / Mask2Former.

    - Training data: the dataset mapper named ``INPUT.DATASET_MAPPER_NAME``, through
      :func:`build_train_loader` (a stream that is a function of the seed and the iteration).
      Evaluation data: detectron2's test loader (``DatasetMapper``).
    - Optimizer: :func:`build_optimizer`; LR schedule: detectron2's, with DeepLab's ``WarmupPolyLR``.
    - Evaluators: :func:`build_evaluator` by the datasets' ``evaluator_type``.
    - Runs on the CPU (DDP over gloo processes, see :func:`launch`); AMP on the CPU: see
      :func:`build_step_trainer`.
    - ``resume_or_load(resume=True)`` continues exactly: the checkpoints (written atomically)
      hold the optimizer, the LR schedule and the seed; the data stream restarts at the next
      iteration, and the global random generators (used by the model, e.g. point sampling and
      dropout) are seeded at every iteration from (seed, iteration, rank).
    """

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        self.seed = training_seed(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg, seed=self.seed)
        device_ids = [comm.get_local_rank()] if uses_cuda(cfg.MODEL.DEVICE) else None
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = MaskFormerCheckpointer.from_config(cfg, model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        self.data_loader.restart_at(self.start_iter, self.seed)

    def run_step(self) -> None:
        seed_rngs(derive_seed(self.seed, self.iter, comm.get_rank()))
        super().run_step()

    def state_dict(self) -> Dict:
        return {**super().state_dict(), "_trainer": self._trainer.state_dict(), "seed": self.seed}

    def load_state_dict(self, state_dict: Dict) -> None:
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logging.getLogger(__name__).warning("The checkpoint has no optimizer state: the optimizer starts afresh")
        self.seed = state_dict.get("seed", self.seed)

    def build_writers(self) -> List[EventWriter]:
        """detectron2's default writers; TensorBoard's only where it is installed."""
        os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
        writers = [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]
        if importlib.util.find_spec("tensorboard") is not None:
            writers.append(TensorboardXWriter(self.cfg.OUTPUT_DIR))
        return writers

    @classmethod
    def build_train_loader(cls, cfg, seed: Optional[int] = None) -> IterationDataLoader:
        mapper = build_dataset_mapper(cfg, is_train=True)
        return build_train_loader(cfg, mapper, seed=training_seed(cfg) if seed is None else seed)

    @classmethod
    def build_optimizer(cls, cfg, model: nn.Module):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: Optional[str] = None) -> DatasetEvaluator:
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model: nn.Module) -> OrderedDict:
        """Evaluate the semantic segmentation of ``model`` with :class:`SemanticSegmentorWithTTA`.
        Returns :meth:`test`'s results with the suffix "_TTA" on their top-level keys."""
        logging.getLogger(__name__).info("Running inference with test-time augmentation ...")
        semantic_cfg = cfg.clone()
        semantic_cfg.defrost()
        semantic_cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
        semantic_cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [cls.build_evaluator(semantic_cfg, name, output_folder) for name in cfg.DATASETS.TEST]
        results = cls.test(cfg, SemanticSegmentorWithTTA(cfg, model), evaluators)
        return OrderedDict((name + "_TTA", metrics) for name, metrics in results.items())
