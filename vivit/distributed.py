"""The few torch.distributed steps the dataset jobs share: who am I, split the list, gather.

The jobs (`vivit.features`, `vivit.evaluate`) run unchanged in one process or under any launcher
that sets the torch.distributed environment (`torchrun`, `torch.distributed.run`, SLURM wrappers
that export `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`), in the manner of
mmaction2's `tools/test.py`: every rank takes a fixed share of the list, rank 0 gathers the
results. A process group is only created when the environment asks for more than one process.

The jobs exchange only small Python objects (per-video summaries and logits), so they talk over
a gloo group even when the model runs on GPUs (gloo is part of every torch build and needs no
device); a process group the caller created already (e.g. nccl for training) is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "DistributedContext",
    "available_devices",
    "distributed_context",
    "launch_env",
    "local_device",
    "resolve_device",
    "shard",
    "training_context",
    "training_timeout",
]

T = TypeVar("T")

#: How long a rank waits for the others at a barrier or gather. Ranks of a dataset job finish
#: their shares at different times (long videos, failed decodes), so the default 30 minutes of
#: torch.distributed is too short; a rank that dies makes the launcher stop the others anyway.
DEFAULT_TIMEOUT = timedelta(hours=24)
_TIMEOUT_ENV = "VIVIT_DIST_TIMEOUT_S"


@dataclass(frozen=True)
class _LaunchEnv:
    rank: int
    world_size: int
    local_rank: int


@contextmanager
def _process_group(env: _LaunchEnv, backend: str, timeout: timedelta) -> Iterator[DistributedContext]:
    """The default process group from the launcher's environment (created here unless the caller made one,
    then destroyed on exit), with a gloo group for the jobs' object collectives."""
    created = False
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise ValueError(
                    f"WORLD_SIZE={env.world_size} but {name} is not set: start the job with torchrun (or set "
                    "MASTER_ADDR and MASTER_PORT as torch.distributed's env:// initialisation needs)"
                )
        if backend == "nccl":
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group(
            backend, init_method="env://", rank=env.rank, world_size=env.world_size, timeout=timeout
        )
        created = True
    ok = False
    try:
        group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
        yield DistributedContext(dist.get_rank(), dist.get_world_size(), env.local_rank, group)
        ok = True
    finally:
        if created:
            _destroy_process_group(drain=ok)


def _destroy_process_group(drain: bool) -> None:
    """Destroy the default process group, after a barrier when every rank got here normally.

    Why the barrier: gloo's worker threads release a finished collective's tensors, which takes the GIL, after
    the waiting rank has been woken. Destroying the group joins those threads while this thread holds the
    GIL: if one is still releasing, neither can go on (seen as a rank that never exits after its last
    all-gather). Waiting on a barrier releases the GIL until every earlier collective is done and released.
    After a failure the barrier is skipped (a dead peer would make it wait for the timeout).
    """
    if drain:
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=120))
            else:
                dist.barrier()
        except Exception:  # a peer gone at the very end: destroy anyway
            pass
    dist.destroy_process_group()


def launch_env() -> _LaunchEnv:
    """Rank, world size and local rank as the launcher set them (0, 1, 0 without a launcher).

    Raises:
        ValueError: If the variables are set but not consistent integers.
    """
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank if world > 1 else 0)))
    except ValueError:
        raise ValueError(
            "the torch.distributed environment is malformed: RANK, WORLD_SIZE and LOCAL_RANK must be integers "
            f"(got RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}, "
            f"LOCAL_RANK={os.environ.get('LOCAL_RANK')!r})"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"the torch.distributed environment is inconsistent: RANK={rank}, WORLD_SIZE={world}")
    return _LaunchEnv(rank, world, local)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """The share of `items` that rank `rank` of `world_size` processes: every `world_size`-th item.

    Strided rather than contiguous so that ranks get a similar mix when the list is sorted (by
    folder, by length); deterministic, and the shares of all ranks partition the list.

    Args:
        items: The whole list, in the same order on every rank.
        rank: This process's rank, `0 <= rank < world_size`.
        world_size: Number of processes.

    Returns:
        `items[rank::world_size]` as a list.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return list(items[rank::world_size])


class DistributedContext:
    """Rank, world size and collectives of the current job (trivial in a single process).

    Attributes:
        rank: This process's rank (0 alone).
        world_size: Number of processes (1 alone).
        local_rank: Rank on this machine; picks the GPU.
    """

    def __init__(self, rank: int, world_size: int, local_rank: int, group: Any = None) -> None:
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self._group = group

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, which prints summaries and writes gathered outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait until every rank gets here (no-op alone)."""
        if self.distributed:
            dist.barrier(group=self._group)

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on every rank (`[obj]` alone). Objects are pickled."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._group)
        return out

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of `items` (see `shard`)."""
        return shard(items, self.rank, self.world_size)


@contextmanager
def distributed_context() -> Iterator[DistributedContext]:
    """The job's `DistributedContext`, with a gloo process group while the block runs if needed.

    Alone (no `WORLD_SIZE`, or 1): nothing is initialised. Under a launcher: a default process
    group is created with the gloo backend from the environment (`init_method="env://"`) and
    destroyed on exit, unless the caller already created one; the jobs then use a gloo subgroup
    (the default group itself when it is gloo). The collectives time out after 24 hours
    (`VIVIT_DIST_TIMEOUT_S` to change).

    Raises:
        ValueError: If the launcher's variables are malformed.
        RuntimeError: If the process group cannot be created (e.g. `MASTER_ADDR` unreachable).
    """
    env = launch_env()
    if env.world_size == 1:
        yield DistributedContext(0, 1, 0)
        return
    timeout = timedelta(seconds=float(os.environ.get(_TIMEOUT_ENV, DEFAULT_TIMEOUT.total_seconds())))
    with _process_group(env, "gloo", timeout) as context:
        yield context


def local_device(requested: str | torch.device | None, context: DistributedContext) -> torch.device:
    """The device this rank computes on.

    `None` or `"auto"` picks CUDA when available, else the CPU. Under a launcher a CUDA device
    without an index (`cuda`, or the automatic choice) becomes `cuda:LOCAL_RANK`, so that each
    rank of a machine uses its own GPU; an explicit index is kept.

    Args:
        requested: A device name or object, `"auto"` or `None`.
        context: The job's context (its `local_rank`).

    Returns:
        The device.
    """
    if requested is None or requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", context.local_rank if context.distributed else torch.cuda.current_device())
    return device


def available_devices() -> list[str]:
    """The devices this torch build can use on this machine, as device names (`cpu`, `cuda:0`, `mps`, ...)."""
    devices = ["cpu"]
    if torch.cuda.is_available():  # NVIDIA, or AMD under ROCm (also "cuda" in torch)
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        devices += [f"xpu:{i}" for i in range(xpu.device_count())]
    return devices


def resolve_device(name: str | None) -> torch.device:
    """A device name as a torch device this machine can use (None: CUDA when available, else the CPU).

    Checked by what every backend answers: can a tensor live there? So a CUDA name on a machine or
    torch build without CUDA, an index past the GPUs there are, `mps` off Apple silicon or the
    `meta` device are refused here, before any model is built or downloaded.

    Raises:
        ValueError: `name` cannot be used; the message says why and lists `available_devices()`.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def refuse(why: str) -> NoReturn:
        raise ValueError(f"{name}: {why}; devices available here: {', '.join(available_devices())}")

    try:
        device = torch.device(name)
    except RuntimeError:
        refuse("not a torch device name (e.g. cpu, cuda, cuda:1, mps)")
    if device.type == "meta":
        refuse("the meta device holds no data, so nothing can run on it")
    if device.type == "cuda" and not torch.cuda.is_available():
        built = torch.backends.cuda.is_built()
        refuse(f"this torch ({torch.__version__}) " + ("sees no CUDA device" if built else "was built without CUDA"))
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        refuse(f"this machine has {count} CUDA device{'' if count == 1 else 's'}")
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps is not None and mps.is_available()):
        built = mps is not None and mps.is_built()
        refuse(
            f"this torch ({torch.__version__}) "
            + ("sees no MPS device" if built else "was built without MPS (Apple GPUs)")
        )
    try:  # the one question every backend answers: can a tensor live there?
        torch.empty(0, device=device)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        refuse(f"not usable with this torch ({torch.__version__}: {reason})")
    return device


#: How long a rank of a training job waits for the others at a collective before it gives up. The
#: ranks of a training job meet at every update, so a rank that is missing this long has died or
#: hangs; the job then ends with an error instead of waiting for ever. Evaluation and checkpoints
#: happen at the same step on every rank, so the wait is short in a healthy job.
DEFAULT_TRAINING_TIMEOUT = timedelta(minutes=30)


def training_timeout() -> timedelta:
    """The collective timeout of training jobs: `VIVIT_DIST_TIMEOUT_S` seconds, default 30 minutes."""
    text = os.environ.get(_TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TRAINING_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{_TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return timedelta(seconds=seconds)


@contextmanager
def training_context(device: torch.device) -> Iterator[DistributedContext]:
    """The `DistributedContext` of a training job: a process group for gradients while the block runs.

    Alone (no `WORLD_SIZE`, or 1): nothing is initialised. Under a launcher: the default process
    group is created from the environment with nccl for CUDA devices and gloo otherwise (unless
    the caller created one), with `training_timeout()` on every collective (nccl also gets
    asynchronous error handling, so a collective that times out raises instead of hanging). The
    context's own collectives (gathering evaluation results, which are Python objects) run on a
    gloo group.

    Args:
        device: this rank's device (`local_device`); picks the backend.

    Raises:
        ValueError: If the launcher's variables are malformed.
        RuntimeError: If the process group cannot be created.
    """
    env = launch_env()
    if env.world_size == 1:
        yield DistributedContext(0, 1, 0)
        return
    with _process_group(env, "nccl" if device.type == "cuda" else "gloo", training_timeout()) as context:
        yield context
