"""Crash-proof training with train_net.py in subprocesses: a run killed with SIGKILL (or while it was
saving) resumes with --resume to the weights of a run that never stopped; a damaged checkpoint is an
error naming it; two single-process "machines" on localhost (gloo) train on different images and only
rank 0 writes checkpoints."""
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
import torch

from conftest import REPO
from helpers import tiny_cfg
from mask_former.data.demo_dataset import generate_demo_dataset

PYTHON = str(REPO / ".venv" / "bin" / "python")
MAX_ITER, CHECKPOINT_PERIOD = 10, 2

# train_net.py whose training mapper also appends the name of every image it maps to
# OUTPUT_DIR/files.rank<R>.txt (a mapper registered under its own name, not a patch).
FILE_LOGGING_TRAIN_NET = '''
import os
import sys

from detectron2.utils import comm

from mask_former.data.dataset_mappers.build import DATASET_MAPPER_REGISTRY


@DATASET_MAPPER_REGISTRY.register_as("file_logging_panoptic")
class FileLoggingMapper:
    def __init__(self, cfg, is_train=True):
        self.mapper = DATASET_MAPPER_REGISTRY.get("mask_former_panoptic")(cfg, is_train=is_train)
        self.log = os.path.join(cfg.OUTPUT_DIR, f"files.rank{comm.get_rank()}.txt")

    def __call__(self, record):
        with open(self.log, "a") as f:
            f.write(os.path.basename(record["file_name"]) + "\\n")
        return self.mapper(record)


if __name__ == "__main__":
    import train_net

    sys.exit(train_net.cli())
'''


@pytest.fixture(scope="module")
def setup_dir(tmp_path_factory):
    """The demo dataset, the config of a tiny panoptic model trained on it, and the file-logging script."""
    folder = tmp_path_factory.mktemp("crash")
    generate_demo_dataset(str(folder / "datasets" / "demo_shapes"), num_train=8, num_val=2, image_size=(48, 64))
    cfg = tiny_cfg(num_classes=6)
    cfg.DATASETS.TRAIN = ("demo_shapes_panoptic_train",)
    cfg.DATASETS.TEST = ()
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_panoptic"
    cfg.INPUT.MIN_SIZE_TRAIN = (40, 48)  # random augmentation: resuming must restore the data stream
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.CROP.ENABLED = False
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.2  # random draws in the model: resuming must restore them too
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.MAX_ITER = MAX_ITER
    cfg.SOLVER.CHECKPOINT_PERIOD = CHECKPOINT_PERIOD
    cfg.SOLVER.BASE_LR = 1e-3
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 7
    (folder / "config.yaml").write_text(cfg.dump())
    (folder / "train_with_file_log.py").write_text(FILE_LOGGING_TRAIN_NET)
    return folder


def train_net_command(setup_dir, output_dir, *args, script=None):
    script = script or str(REPO / "train_net.py")
    config = str(setup_dir / "config.yaml")
    return [PYTHON, script, "--config-file", config, *args, "OUTPUT_DIR", str(output_dir), "MODEL.DEVICE", "cpu"]


def environment(setup_dir):
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "DETECTRON2_DATASETS": str(setup_dir / "datasets"), "PYTHONPATH": path}


def run_train_net(setup_dir, output_dir, *args):
    result = subprocess.run(
        train_net_command(setup_dir, output_dir, *args), cwd=REPO, env=environment(setup_dir),
        capture_output=True, text=True, timeout=300,
    )
    return result


def final_weights(output_dir):
    return torch.load(output_dir / "model_final.pth", weights_only=True)["model"]


def assert_same_weights(expected, actual):
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


@pytest.fixture(scope="module")
def straight_run(setup_dir):
    """The final weights of a run that was never stopped."""
    output = setup_dir / "straight"
    result = run_train_net(setup_dir, output)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(output.glob("events.out.tfevents.*")), "every run writes TensorBoard events"
    return final_weights(output)


@pytest.fixture(scope="module")
def killed_run(setup_dir):
    """The output folder of a run killed with SIGKILL once it had written a checkpoint."""
    output = setup_dir / "killed"
    process = subprocess.Popen(
        train_net_command(setup_dir, output), cwd=REPO, env=environment(setup_dir),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    pointer = output / "last_checkpoint"
    deadline = time.monotonic() + 240
    while not pointer.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert pointer.exists() and not (output / "model_final.pth").exists(), "the run ended before it was killed"
    return output


def resume(setup_dir, source, name):
    """``train_net.py --resume`` on a copy of the output folder ``source``."""
    output = setup_dir / name
    shutil.copytree(source, output)
    result = run_train_net(setup_dir, output, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result


def test_run_killed_after_a_checkpoint_resumes_to_the_same_weights(setup_dir, straight_run, killed_run):
    last = (killed_run / "last_checkpoint").read_text()
    output, _ = resume(setup_dir, killed_run, "resumed")
    assert_same_weights(straight_run, final_weights(output))
    assert int(last[len("model_"):-len(".pth")]) + 1 < MAX_ITER  # the resumed run trained some iterations


def test_run_killed_while_saving_resumes_from_the_last_complete_checkpoint(setup_dir, straight_run, killed_run):
    """What a crash inside ``atomic_write`` leaves: the next checkpoint half written to its temporary
    file, and the pointer still naming the last complete checkpoint."""
    last = (killed_run / "last_checkpoint").read_text()
    iteration = int(last[len("model_"):-len(".pth")])
    next_checkpoint = f"model_{iteration + CHECKPOINT_PERIOD:07d}.pth"
    crashed = setup_dir / "crashed_while_saving"
    shutil.copytree(killed_run, crashed)
    complete = (crashed / last).read_bytes()
    (crashed / f"{next_checkpoint}.tmp-4242").write_bytes(complete[: len(complete) // 2])
    output, result = resume(setup_dir, crashed, "resumed_after_partial_save")
    assert f"Starting training from iteration {iteration + 1}" in result.stdout + result.stderr
    assert_same_weights(straight_run, final_weights(output))


def test_truncated_checkpoint_is_an_error_naming_it(setup_dir, killed_run):
    # Depends on the checkpoint reader reporting unreadable files as CheckpointError (train_net.py
    # then prints "error: ..." and exits with status 2) rather than torch's traceback.
    damaged = setup_dir / "damaged"
    shutil.copytree(killed_run, damaged)
    last = damaged / (damaged / "last_checkpoint").read_text()
    last.write_bytes(last.read_bytes()[:1000])
    result = run_train_net(setup_dir, damaged, "--resume")
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error_lines and str(last) in error_lines[-1], result.stderr[-3000:]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_machines_of_one_process_split_the_data_and_rank_0_saves(setup_dir):
    url = f"tcp://127.0.0.1:{free_port()}"
    outputs = [setup_dir / f"machine{rank}" for rank in (0, 1)]
    processes = [
        subprocess.Popen(
            train_net_command(
                setup_dir, outputs[rank], "--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(rank),
                "--dist-url", url, "SOLVER.MAX_ITER", "3", "INPUT.DATASET_MAPPER_NAME", "file_logging_panoptic",
                script=str(setup_dir / "train_with_file_log.py"),
            ),
            cwd=REPO, env=environment(setup_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    logs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], "\n".join(log[-2000:] for log in logs)
    files = [(outputs[rank] / f"files.rank{rank}.txt").read_text().split() for rank in (0, 1)]
    assert len(files[0]) == len(files[1]) == 3  # one image per process and iteration (IMS_PER_BATCH 2)
    assert all(first != second for first, second in zip(*files)), files
    assert (outputs[0] / "model_final.pth").exists()
    assert not any(name.endswith(".pth") or name == "last_checkpoint" for name in os.listdir(outputs[1]))
