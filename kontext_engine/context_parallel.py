"""One edit across several devices: diffusers' Ulysses context parallelism, one process per device.

Rank 0 is the serving process. It hosts a TCPStore on 127.0.0.1 (a port the OS picks) and starts one
worker process per extra device (`ContextParallelGroup.start`); all join one torch.distributed group
(NCCL on GPUs, gloo on CPUs) plus a gloo group for control messages, which never waits on a GPU. Every
rank holds the whole pipeline on its own device; the transformer splits each sequence across the
ranks (all-to-all around attention), and every rank runs the same pipeline call in lockstep:

- rank 0 broadcasts each batch (`share`); workers follow (`follow`), rank 0's warm-up included;
- after every step rank 0 broadcasts whether to stop (`agree`), so every rank stops at the same step;
- First Block Cache averages its residual difference over the ranks before deciding (identical
  decisions, or the collectives would deadlock);
- only rank 0 decodes latents and encodes images.

A worker that exits or stops sending heartbeats breaks the group: rank 0's `on_failure` hears of it
within HEARTBEAT_TIMEOUT_S, whatever rank 0 is blocked in. A group is not repaired in place (a
collective stuck on a GPU cannot be taken back): the owner answers what was in flight and starts again.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

# Every process: NVLink multicast (NVLS) off (NCCL, symmetric memory and NVSHMEM each have a switch), and
# gloo's and NCCL's own sockets on the loopback interface only (the group never leaves the host).
GROUP_ENVIRONMENT = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
                     "GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}
HEARTBEAT_INTERVAL_S = 1.0
HEARTBEAT_TIMEOUT_S = 10.0  # counted from a worker's first heartbeat (imports come before it)
# A collective of a pipeline call that waits this long has a peer that will never come (NCCL's own
# watchdog then aborts). Long, because ranks compile their graphs independently at warm-up and may arrive
# minutes apart; KONTEXT_COLLECTIVE_TIMEOUT_S sets it.
DEFAULT_COLLECTIVE_TIMEOUT_S = 900.0
# The control channel's wait has no useful bound: a worker waits there for rank 0's next batch however
# long the instance idles (with the collective timeout an idle group broke itself after 15-30 minutes), and
# a rank 0 that is gone is seen through the heartbeat within a second.
CONTROL_TIMEOUT = datetime.timedelta(days=365)
JOIN_TIMEOUT_S = 60.0  # for every worker to start and join

FailureCallback = Callable[[str], None]


class GroupBroken(RuntimeError):
    """A pipeline call failed because a worker of the group died or hung (the message says which)."""


def attention_backend_for(device: torch.device) -> str:
    """A diffusers attention backend that can split attention across ranks: cuDNN's SDPA kernel on a
    GPU (the kernel plain SDPA picks there), the native one on a CPU."""
    return "_native_cudnn" if device.type == "cuda" else "native"


def enable_context_parallel(transformer, device: torch.device) -> None:
    """Ulysses over every rank of the default group, through the transformer's own `_cp_plan`.

    What `ModelMixin.enable_parallelism` does, with the mesh built on this rank's device: diffusers
    0.42.1 derives the device as rank % device_count, which is another instance's GPU for a group on
    GPUs 2 and 3, and a division by zero on a CPU. Each sequence must divide by the degree
    (`tokens_divide`): diffusers' uneven split (`ulysses_anything`) cannot be compiled (torch 2.11
    Dynamo: "ProcessGroupVariable" unsupported) and gloo cannot gather uneven pieces.
    """
    from diffusers import ContextParallelConfig
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    degree = dist.get_world_size()
    heads = transformer.config.num_attention_heads
    if heads % degree:  # Ulysses gives each rank a share of the heads (the text's 512 tokens divide by 2..512)
        raise ValueError(f"context_parallel={degree} must divide the transformer's {heads} attention heads")
    mesh = init_device_mesh(device.type, (1, degree), mesh_dim_names=("ring", "ulysses"))
    context = ContextParallelConfig(ulysses_degree=degree, mesh=mesh)
    config = ParallelConfig(context_parallel_config=context)
    config.setup(dist.get_rank(), degree, device, mesh=mesh)
    transformer._parallel_config = config
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = config
    apply_context_parallel(transformer, context, transformer._cp_plan)


class ContextParallelGroup:
    """This process's place in a context-parallel group: its rank, the control channel, and on rank 0
    the worker processes and their monitor."""

    def __init__(self, rank: int, world_size: int, device: torch.device, control):
        self.rank = rank
        self.world_size = world_size
        self.device = device
        self._control = control
        self._workers: list[subprocess.Popen] = []
        self._monitor: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._broken = threading.Event()
        self._failing = threading.Lock()
        self._on_failure: Optional[FailureCallback] = None
        self.failure: Optional[str] = None

    # ---- joining -------------------------------------------------------------------------------

    @classmethod
    def start(cls, devices: Sequence[torch.device], worker_args: Sequence[str],
              on_failure: Optional[FailureCallback] = None) -> "ContextParallelGroup":
        """Rank 0: starts one worker per device after the first (each runs `python -m
        kontext_engine.parallel_worker` with worker_args) and joins the group with them. The monitor
        runs from the first worker's start, so a worker that dies before joining is reported."""
        os.environ.update(GROUP_ENVIRONMENT)
        world_size = len(devices)
        listener = socket.create_server(("127.0.0.1", 0))  # the store listens on loopback only
        port = listener.getsockname()[1]
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=True, wait_for_workers=False,
                              master_listen_fd=listener.detach(), timeout=datetime.timedelta(seconds=JOIN_TIMEOUT_S))
        group = cls(0, world_size, devices[0], control=None)
        try:
            for rank, device in enumerate(devices[1:], start=1):
                command = [python_interpreter(), "-m", "kontext_engine.parallel_worker", "--rank", str(rank),
                           "--world-size", str(world_size), "--port", str(port), "--device", str(device),
                           "--parent-pid", str(os.getpid()), *worker_args]
                group._workers.append(subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                                       env={**os.environ, **GROUP_ENVIRONMENT}))
            group._monitor = threading.Thread(target=group._watch, args=(on_failure,),
                                              name="context-parallel-monitor", daemon=True)
            group._monitor.start()
            group._control = _connect(0, world_size, devices[0], store)
        except BaseException:
            group._stopping.set()
            _kill(group._workers)
            raise
        return group

    # ---- lockstep messages ---------------------------------------------------------------------

    def share(self, message):
        """Rank 0 sends message to every worker; a worker gets rank 0's (its own argument is ignored)."""
        box = [message if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def agree(self, decision: bool) -> bool:
        """Rank 0's decision, on every rank (after each denoising step: stop or go on)."""
        flag = torch.tensor([int(decision)], dtype=torch.int32)
        dist.broadcast(flag, src=0, group=self._control)
        return bool(flag.item())

    # ---- faults and shutdown (rank 0) ------------------------------------------------------------

    def _watch(self, on_failure: Optional[FailureCallback]) -> None:
        """Reports the first worker that exits or goes HEARTBEAT_TIMEOUT_S without a heartbeat."""
        self._on_failure = on_failure
        selector = selectors.DefaultSelector()
        heard = {}  # rank -> time of its last heartbeat; absent until its first
        for rank, worker in enumerate(self._workers, start=1):
            os.set_blocking(worker.stdout.fileno(), False)
            selector.register(worker.stdout, selectors.EVENT_READ, rank)
        while not self._stopping.is_set() and self.failure is None:
            for key, _ in selector.select(timeout=HEARTBEAT_INTERVAL_S):
                if key.fileobj.read():
                    heard[key.data] = time.monotonic()
            problem = self._problem(heard)
            if problem is not None and not self._stopping.is_set():
                self.fail(problem)

    def fail(self, problem: str) -> None:
        """Marks the group broken (once): its workers are killed and on_failure hears why. Called by the
        monitor, and by rank 0 when a call failed on it (the workers can no longer be in step)."""
        with self._failing:
            if self.failure is not None:
                return
            self.failure = problem
        self._broken.set()
        log.error("context-parallel group broken: %s", problem)
        if self._on_failure is not None:
            self._on_failure(problem)
        _kill(self._workers)

    def broken(self, wait_s: float) -> Optional[str]:
        """The group's failure, waiting up to wait_s for the monitor's verdict (a collective may fail
        before the monitor noticed why); None if the group is whole."""
        self._broken.wait(wait_s)
        return self.failure

    def _problem(self, heard: dict) -> Optional[str]:
        now = time.monotonic()
        for rank, worker in enumerate(self._workers, start=1):
            if worker.poll() is not None:
                return f"worker rank {rank} ({worker.args[worker.args.index('--device') + 1]}) exited with code {worker.returncode}"
            if rank in heard and now - heard[rank] > HEARTBEAT_TIMEOUT_S:
                return f"worker rank {rank} sent no heartbeat for {now - heard[rank]:.0f} s"
        return None

    def close(self) -> None:
        """Rank 0: asks the workers to stop, waits for them (then kills), leaves the group."""
        self._stopping.set()
        if self.failure is None:
            try:
                self.share(("stop",))
            except Exception:  # a broken group cannot carry the message; the workers are killed below
                log.warning("stop message not delivered", exc_info=True)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for worker in self._workers:
            try:
                worker.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        _kill(self._workers)
        if self._monitor is not None:
            self._monitor.join(timeout=HEARTBEAT_INTERVAL_S * 3)
        if dist.is_initialized():
            dist.destroy_process_group()


def _connect(rank: int, world_size: int, device: torch.device, store):
    """Joins the default process group (NCCL on a GPU, gloo on a CPU) for the pipeline's collectives;
    returns the gloo group that carries control messages."""
    timeout = datetime.timedelta(seconds=float(os.environ.get("KONTEXT_COLLECTIVE_TIMEOUT_S",
                                                              DEFAULT_COLLECTIVE_TIMEOUT_S)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", store=store, rank=rank, world_size=world_size, timeout=timeout,
                                device_id=device)
    else:
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timeout)
    return dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)


def _kill(workers: Sequence[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()


def python_interpreter() -> str:
    """The interpreter of this environment. Inside Triton's Python backend stub sys.executable is not
    a Python; the stub found its Python through PATH, so the workers do too."""
    if Path(sys.executable).name.startswith("python"):
        return sys.executable
    found = shutil.which("python3") or shutil.which("python")
    if found is None:
        raise RuntimeError("context parallelism needs a python3 on PATH to start its workers")
    return found


# ---- the worker process ---------------------------------------------------------------------------

def worker_arguments(settings, max_batch_size: int, cache_dir: Path) -> list[str]:
    """What a worker needs to build the same engine as rank 0."""
    return ["--settings", json.dumps(dataclasses.asdict(settings)), "--max-batch-size", str(max_batch_size),
            "--cache-dir", str(cache_dir)]


def _heartbeat(parent_pid: int) -> None:
    """One byte per interval on stdout (a pipe to rank 0's monitor). When rank 0 is gone (the pipe
    broke, or this process was handed to another parent) the worker ends itself: nothing else would,
    and it holds a GPU."""
    out = sys.stdout.buffer
    while True:
        try:
            out.write(b".")
            out.flush()
        except OSError:
            os._exit(1)
        if os.getppid() != parent_pid:
            os._exit(1)
        time.sleep(HEARTBEAT_INTERVAL_S)


def worker_main(argv: Optional[Sequence[str]] = None) -> int:
    from .engine import KontextEngine
    from .settings import EngineSettings

    parser = argparse.ArgumentParser(description="A context-parallel worker (started by rank 0, not by hand).")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--max-batch-size", type=int, required=True)
    parser.add_argument("--cache-dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s context-parallel rank {args.rank} %(levelname)s %(name)s: %(message)s")
    threading.Thread(target=_heartbeat, args=(args.parent_pid,), name="heartbeat", daemon=True).start()
    device = torch.device(args.device)
    store = dist.TCPStore("127.0.0.1", args.port, args.world_size, is_master=False,
                          timeout=datetime.timedelta(seconds=JOIN_TIMEOUT_S))
    group = ContextParallelGroup(args.rank, args.world_size, device, _connect(args.rank, args.world_size, device, store))
    settings = EngineSettings(**json.loads(args.settings))
    engine = KontextEngine.build(settings, device, args.max_batch_size, Path(args.cache_dir), group)
    engine.follow(Path(args.cache_dir))
    return 0
