"""The trainer of MaskFormer / Mask2Former.

A training loop of its own on detectron2's ``TrainerBase`` (as detectron2's ``tools/plain_train_net.py``
owns its loop), with detectron2's hooks, writers and evaluation loop: detectron2 v0.6's
``DefaultTrainer`` builds its step trainer and its DDP model for CUDA only (AMP and ``device_ids``), and
has no way to resume the data stream and the random generators exactly.
"""
import importlib.util
import logging
import os
import weakref
from collections import OrderedDict
from typing import Dict, List, Optional

from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, HookBase, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.evaluation import DatasetEvaluator, verify_results
from detectron2.projects.deeplab import build_lr_scheduler
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger
from fvcore.nn.precise_bn import get_bn_modules
from torch import nn

from ..checkpoint import MaskFormerCheckpointer
from ..config import uses_cuda
from ..data.dataset_mappers import build_test_mapper, build_train_mapper
from ..evaluation import build_evaluator
from .optimizer import build_optimizer
from .rng import derive_seed, seed_rngs
from .train_loader import IterationDataLoader, build_train_loader
from .tta import SemanticSegmentorWithTTA

__all__ = ["STEP_TRAINER_STATE_KEY", "Trainer", "build_step_trainer", "training_seed"]

STEP_TRAINER_STATE_KEY = "_trainer"
"""Key of the step trainer's state (the optimizer's) in the trainer's checkpointed state: the key of
detectron2's ``DefaultTrainer`` after v0.6 (v0.6 leaves the optimizer out of its checkpoints), so that
checkpoints of either trainer resume in the other."""

WRITE_PERIOD = 20
"""Iterations between two writes of the metrics (detectron2's default)."""


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


class Trainer(TrainerBase):
    """
    The trainer of MaskFormer / Mask2Former, with ``DefaultTrainer``'s interface (``build_*`` class
    methods to override, ``resume_or_load``, ``train``, ``test``).

    - Training data: the dataset mapper named ``INPUT.DATASET_MAPPER_NAME`` (video datasets: the clip
      mapper, see ``CLIP_MAPPERS``), through :func:`build_train_loader` (a stream that is a function of the
      seed and the iteration). Evaluation data: detectron2's test loader (``DatasetMapper``; video
      datasets: the clip mapper with ``is_train=False``).
    - Optimizer: :func:`build_optimizer`; LR schedule: detectron2's, with DeepLab's ``WarmupPolyLR``.
    - Evaluators: :func:`build_evaluator` by the datasets' ``evaluator_type``; ``TEST.AUG.ENABLED``:
      :meth:`test_with_TTA`.
    - Runs on the CPU (DDP over gloo processes, see :func:`launch`); AMP on the CPU: see
      :func:`build_step_trainer`.
    - ``resume_or_load(resume=True)`` continues exactly: the checkpoints (written atomically)
      hold the optimizer, the LR schedule and the seed; the data stream restarts at the next
      iteration, and the global random generators (used by the model, e.g. point sampling and
      dropout) are seeded at every iteration from (seed, iteration, rank).

    Attributes:
        cfg: the config, scaled by :meth:`auto_scale_workers`.
        seed: the seed of the data stream and of the per-iteration random generators.
        step_trainer: detectron2's ``SimpleTrainer`` / ``AMPTrainer``, which runs one iteration.
        scheduler: the LR schedule.
        checkpointer: saves the model and this trainer's state in ``OUTPUT_DIR``.
        last_eval_results: the results of the last evaluation during training (None before one).
    """

    def __init__(self, cfg):
        super().__init__()
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = self.auto_scale_workers(cfg, comm.get_world_size())
        self.cfg = cfg
        self.seed = training_seed(cfg)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg, seed=self.seed)
        # Without device_ids, DDP over CPU processes (gloo); detectron2 would name the local GPU.
        device_ids = [comm.get_local_rank()] if uses_cuda(cfg.MODEL.DEVICE) else None
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)
        self.step_trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = MaskFormerCheckpointer.from_config(cfg, model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.last_eval_results: Optional[OrderedDict] = None
        self.register_hooks(self.build_hooks())

    @property
    def model(self) -> nn.Module:
        """The trained model (wrapped in ``DistributedDataParallel`` where several processes train)."""
        return self.step_trainer.model

    @property
    def data_loader(self) -> IterationDataLoader:
        return self.step_trainer.data_loader

    @property
    def optimizer(self):
        return self.step_trainer.optimizer

    def resume_or_load(self, resume: bool = True) -> None:
        """
        With ``resume`` and a checkpoint in ``OUTPUT_DIR`` (its ``last_checkpoint`` file): load the model and
        the training state from it and continue at the iteration after it. Otherwise load ``MODEL.WEIGHTS``
        (the model only) and start at iteration 0.
        """
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1  # the checkpoint holds the state after iteration ``self.iter``
        self.data_loader.restart_at(self.start_iter, self.seed)

    def train(self) -> Optional[OrderedDict]:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``. With ``TEST.EXPECTED_RESULTS``, check the last
        evaluation's results against them and return those results (main process)."""
        super().train(self.start_iter, self.max_iter)
        if not (self.cfg.TEST.EXPECTED_RESULTS and comm.is_main_process()):
            return None
        if self.last_eval_results is None:
            raise RuntimeError("TEST.EXPECTED_RESULTS is set, but no evaluation ran during training")
        verify_results(self.cfg, self.last_eval_results)
        return self.last_eval_results

    def run_step(self) -> None:
        seed_rngs(derive_seed(self.seed, self.iter, comm.get_rank()))
        self.step_trainer.iter = self.iter
        self.step_trainer.run_step()

    def state_dict(self) -> Dict:
        """The iteration, the hooks' states (the LR schedule's), the optimizer's and the seed."""
        return {**super().state_dict(), STEP_TRAINER_STATE_KEY: self.step_trainer.state_dict(), "seed": self.seed}

    def load_state_dict(self, state_dict: Dict) -> None:
        super().load_state_dict(state_dict)
        if STEP_TRAINER_STATE_KEY in state_dict:
            self.step_trainer.load_state_dict(state_dict[STEP_TRAINER_STATE_KEY])
        else:
            logging.getLogger(__name__).warning("The checkpoint has no optimizer state: the optimizer starts afresh")
        self.seed = state_dict.get("seed", self.seed)

    def build_hooks(self) -> List[Optional[HookBase]]:
        """
        detectron2's hooks, in this order: iteration timer, LR schedule, PreciseBN (see
        :meth:`build_precise_bn_hook`), then in the main process the periodic checkpointer; evaluation
        every ``TEST.EVAL_PERIOD`` iterations and at the end (after the checkpoint, which is then there to
        debug a failing evaluation with); last, in the main process, the writers of the metrics (the
        evaluation's included). None stands for a hook left out.
        """
        main_process = comm.is_main_process()
        return [
            hooks.IterationTimer(),
            hooks.LRScheduler(),
            self.build_precise_bn_hook(),
            hooks.PeriodicCheckpointer(self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD) if main_process else None,
            hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self.evaluate_during_training),
            hooks.PeriodicWriter(self.build_writers(), period=WRITE_PERIOD) if main_process else None,
        ]

    def build_precise_bn_hook(self) -> Optional[hooks.PreciseBN]:
        """Where ``TEST.PRECISE_BN.ENABLED`` and the model has batch norms: before each evaluation, their
        statistics recomputed on ``TEST.PRECISE_BN.NUM_ITER`` batches of a training loader of their own (no
        workers), so that the training stream is not disturbed. None otherwise."""
        if not (self.cfg.TEST.PRECISE_BN.ENABLED and get_bn_modules(self.model)):
            return None
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0
        loader = self.build_train_loader(cfg, seed=self.seed)
        return hooks.PreciseBN(cfg.TEST.EVAL_PERIOD, self.model, loader, cfg.TEST.PRECISE_BN.NUM_ITER)

    def evaluate_during_training(self) -> OrderedDict:
        """:meth:`test` of the model being trained; the results are kept in ``last_eval_results``."""
        self.last_eval_results = self.test(self.cfg, self.model)
        return self.last_eval_results

    def build_writers(self) -> List[EventWriter]:
        """detectron2's default writers; TensorBoard's only where it is installed."""
        os.makedirs(self.cfg.OUTPUT_DIR, exist_ok=True)
        writers = [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]
        if importlib.util.find_spec("tensorboard") is not None:
            writers.append(TensorboardXWriter(self.cfg.OUTPUT_DIR))
        return writers

    # detectron2's class methods, reused as they are: they call this class's build_* methods.
    auto_scale_workers = staticmethod(DefaultTrainer.auto_scale_workers)
    build_model = classmethod(DefaultTrainer.build_model.__func__)
    test = classmethod(DefaultTrainer.test.__func__)

    @classmethod
    def build_train_loader(cls, cfg, seed: Optional[int] = None) -> IterationDataLoader:
        mapper = build_train_mapper(cfg)
        return build_train_loader(cfg, mapper, seed=training_seed(cfg) if seed is None else seed)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        """detectron2's test loader, with the clip mapper of a video dataset (see ``build_test_mapper``)."""
        return build_detection_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg, dataset_name))

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
