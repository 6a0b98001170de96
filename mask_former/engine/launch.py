"""Launch one or several training processes, on GPUs (detectron2's ``launch``) or on the CPU.

detectron2 v0.6's ``launch`` asserts CUDA and uses the NCCL backend; on the CPU the processes are
spawned here and joined with the gloo backend.
"""
import logging
import socket
from datetime import timedelta
from typing import Callable, Optional, Sequence

import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as launch_on_gpus
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm

from ..compat import set_local_process_group
from ..config import uses_cuda

__all__ = ["find_free_port", "launch"]


def find_free_port() -> int:
    """A TCP port of this machine that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    main_func: Callable,
    num_processes_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: Optional[str] = None,
    args: Sequence = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
    device: str = "cuda",
) -> None:
    """
    Run ``main_func(*args)`` in ``num_processes_per_machine`` processes on each machine.

    Args:
        main_func: the function every process runs.
        num_processes_per_machine: processes per machine (``--num-gpus``).
        num_machines, machine_rank: the machines of the job and the rank of this one.
        dist_url: the URL processes join at, e.g. "tcp://127.0.0.1:50152"; "auto" or None picks
            a free local port (single machine only).
        args: arguments of ``main_func``; they must be picklable when several processes run.
        timeout: timeout of the collective operations.
        device: ``MODEL.DEVICE``; on CUDA (when available) detectron2's ``launch`` (NCCL) is used,
            otherwise CPU processes with the gloo backend.
    """
    if uses_cuda(device):
        launch_on_gpus(
            main_func, num_processes_per_machine, num_machines, machine_rank,
            dist_url=dist_url, args=tuple(args), timeout=timeout,
        )
        return
    world_size = num_machines * num_processes_per_machine
    if world_size == 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url must name the first machine's address in multi-machine jobs")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    mp.spawn(
        _cpu_worker,
        nprocs=num_processes_per_machine,
        args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url, tuple(args), timeout),
        daemon=False,
    )


def _cpu_worker(
    local_rank: int,
    main_func: Callable,
    world_size: int,
    num_processes_per_machine: int,
    machine_rank: int,
    dist_url: str,
    args: tuple,
    timeout: timedelta,
) -> None:
    global_rank = machine_rank * num_processes_per_machine + local_rank
    try:
        dist.init_process_group(
            backend="gloo", init_method=dist_url, world_size=world_size, rank=global_rank, timeout=timeout
        )
    except Exception:
        logging.getLogger(__name__).error(f"Process group URL: {dist_url}")
        raise
    try:
        _set_local_process_group(machine_rank, num_processes_per_machine, world_size)
        comm.synchronize()
        main_func(*args)
    finally:
        dist.destroy_process_group()


def _set_local_process_group(machine_rank: int, num_processes_per_machine: int, world_size: int) -> None:
    """Create the group of every machine's processes (all processes must create all groups) and
    record this machine's as detectron2's local process group."""
    for machine in range(world_size // num_processes_per_machine):
        first = machine * num_processes_per_machine
        group = dist.new_group(list(range(first, first + num_processes_per_machine)))
        if machine == machine_rank:
            set_local_process_group(group)
