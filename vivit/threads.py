"""CPU thread policy for inference on a shared or busy machine: `configure_threads`, `thread_info`.

Why (measured, README "Speed"): PyTorch's CPU kernels (ATen, MKL, oneDNN) run on the OpenMP
runtime torch was built with (GNU libgomp in the pip wheels, Intel's libiomp5 in some builds). At
the end of every parallel region a thread that finished its share waits for the others, and by
default it *spins* on the CPU before sleeping (libgomp: up to 300,000 polls, milliseconds;
libiomp5: `KMP_BLOCKTIME` 200 ms). On an idle machine that saves a wake-up. On a busy one the
sibling it waits for has been descheduled by another process, so the spinner burns its time slice
for nothing, the kernel's work is split statically so nobody can take over the sibling's share,
and the process pays for the spin in CPU time and in scheduler priority: a forward took 3-9x as
long and 2-4x the CPU time under two competing processes, while ONNX Runtime and OpenVINO (own
thread pools, work handed out dynamically, no spinning) slowed in proportion to their CPU share.

`OMP_WAIT_POLICY=PASSIVE` makes waiting threads sleep at once. OpenMP reads it only once, when the
runtime is loaded (at `import torch`), so it has to be in the environment before that:
`prefer_passive_openmp()` puts it there (vivit's `__init__` calls it before importing torch, so
`import vivit` before `import torch`, the CLI and `python -m vivit` get it), and
`configure_threads()` says whether it came in time. Neither overrides a policy the user set.

This module imports nothing from vivit and does not import torch at import time.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass

__all__ = [
    "ThreadSettings",
    "configure_job_threads",
    "configure_threads",
    "describe_threads",
    "openmp_runtime",
    "prefer_passive_openmp",
    "thread_info",
]

logger = logging.getLogger(__name__)

# The variables that decide how an OpenMP runtime waits: OMP_WAIT_POLICY (every runtime), GOMP_SPINCOUNT
# (GNU), KMP_BLOCKTIME / KMP_LIBRARY (Intel, LLVM). A user who set any of them has chosen: leave them.
_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "KMP_LIBRARY")
# Set to "keep" to stop vivit from choosing the passive policy (e.g. a dedicated, idle machine where every
# millisecond of wake-up counts).
OPT_OUT_VARIABLE = "VIVIT_OMP_WAIT_POLICY"
_RUNTIMES = {"libgomp": "GNU libgomp", "libiomp5": "Intel libiomp5", "libomp": "LLVM libomp"}


def openmp_runtime() -> str | None:
    """The OpenMP runtime loaded into this process ("GNU libgomp", "Intel libiomp5", "LLVM libomp"), or
    None when none is loaded yet (or the platform does not say: read from /proc/self/maps on Linux)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            text = maps.read()
    except OSError:
        return None
    for name, runtime in _RUNTIMES.items():
        if f"/{name}" in text:  # /usr/lib/libgomp.so.1, torch/lib/libgomp-a34b3233.so.1
            return runtime
    return None


def _runtime_started() -> bool:
    """Whether an OpenMP runtime has already read its environment (it does when it is loaded)."""
    if sys.platform.startswith("linux"):
        return openmp_runtime() is not None
    return "torch" in sys.modules  # elsewhere: assume torch brings it


def prefer_passive_openmp() -> bool:
    """Set `OMP_WAIT_POLICY=PASSIVE` for this process if that can still take effect and nobody chose.

    Does nothing when the user set any OpenMP wait variable (`OMP_WAIT_POLICY`, `GOMP_SPINCOUNT`,
    `KMP_BLOCKTIME`, `KMP_LIBRARY`), when `VIVIT_OMP_WAIT_POLICY=keep`, or when an OpenMP runtime is
    already loaded (it read its environment then; a later change would be ignored). Child processes
    inherit the setting.

    Returns:
        Whether the variable was set now.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "").lower() == "keep":
        return False
    if any(os.environ.get(v) for v in _WAIT_VARIABLES) or _runtime_started():
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


@dataclass(frozen=True)
class ThreadSettings:
    """The thread policy in effect (`configure_threads`, `thread_info`).

    Attributes:
        threads: Intra-op threads of PyTorch (`torch.get_num_threads()`), also used by the OpenVINO
            and ONNX Runtime backends of vivit.
        usable_cores: CPUs this process may run on (`os.sched_getaffinity`).
        workers: Data-loading worker processes the threads were sized around.
        openmp: The OpenMP runtime in use (None: not known).
        wait_policy: `OMP_WAIT_POLICY` as the runtime read it ("PASSIVE", "ACTIVE" or "default").
        passive: Whether waiting threads sleep at once (PASSIVE, `GOMP_SPINCOUNT=0`, `KMP_BLOCKTIME=0`).
    """

    threads: int
    usable_cores: int
    workers: int
    openmp: str | None
    wait_policy: str
    passive: bool


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _passive() -> bool:
    env = os.environ
    return (
        env.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
        or env.get("GOMP_SPINCOUNT", "").strip() == "0"
        or env.get("KMP_BLOCKTIME", "").strip() == "0"
    )


def thread_info(workers: int = 0) -> ThreadSettings:
    """The thread policy in effect now (imports torch)."""
    import torch

    return ThreadSettings(
        threads=torch.get_num_threads(),
        usable_cores=_usable_cores(),
        workers=workers,
        openmp=openmp_runtime(),
        wait_policy=os.environ.get("OMP_WAIT_POLICY", "default").upper(),
        passive=_passive(),
    )


def configure_threads(threads: int | None = None, *, workers: int = 0, passive: bool = True) -> ThreadSettings:
    """Thread policy for inference beside other work: call it once at start-up, before importing torch
    if possible.

    1. `passive=True`: `prefer_passive_openmp()` (see the module docstring). If an OpenMP runtime
       was already loaded with a spinning policy, a RuntimeWarning says how to set it instead
       (`OMP_WAIT_POLICY=PASSIVE` in the environment before Python starts, or `import vivit`
       before `import torch`).
    2. Intra-op threads for the model: `threads`, else the usable cores minus the data-loading
       `workers` that decode beside it (at least 1): `torch.set_num_threads`. Decoding workers
       and model threads that together exceed the cores take turns on them, and the model's
       statically split kernels then wait for whichever thread is off the CPU.

    Args:
        threads: Intra-op threads (default: usable cores - workers, at least 1).
        workers: DataLoader / decoding worker processes that run beside the model.
        passive: Choose the passive OpenMP wait policy where the user has not chosen one.

    Returns:
        The `ThreadSettings` now in effect.

    Raises:
        ValueError: `threads` < 1 or `workers` < 0.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if passive:
        prefer_passive_openmp()
        chosen = any(os.environ.get(v) for v in _WAIT_VARIABLES)
        if not _passive() and not chosen and os.environ.get(OPT_OUT_VARIABLE, "").lower() != "keep":
            warnings.warn(
                "the OpenMP runtime was loaded (by `import torch`) before vivit could choose its passive wait "
                "policy, so its threads spin while they wait, which costs 3-9x on a busy machine; set "
                "OMP_WAIT_POLICY=PASSIVE in the environment before starting Python, or import vivit before torch",
                RuntimeWarning,
                stacklevel=2,
            )
    import torch

    count = threads if threads is not None else max(1, _usable_cores() - workers)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    settings = thread_info(workers)
    logger.debug("thread policy: %s", settings)
    return settings


def configure_job_threads(workers: int) -> ThreadSettings:
    """The thread policy of a job that decodes in `workers` processes beside the model (`vivit features`,
    `evaluate`, `train`): `configure_threads` with the model's threads chosen so that the job does not
    oversubscribe the CPU.

    - `OMP_NUM_THREADS` set (by the user, or by `torchrun`, which sets 1 per process when it starts
      several): that count is kept; only the wait policy is chosen.
    - Else: the usable cores shared among the processes `torchrun` started on this machine
      (`LOCAL_WORLD_SIZE`, default 1), less the `workers` of this process, at least 1.
      (DataLoader workers run one intra-op thread each: PyTorch sets it in every worker.)

    Args:
        workers: Decoding worker processes of this process (`--workers`; 0: decoding in the main process).

    Returns:
        The `ThreadSettings` now in effect.

    Raises:
        ValueError: `workers` < 0.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    # Passive where it can still take effect, without `configure_threads`' warning: a job started from Python
    # after `import torch` (tests, notebooks) keeps OpenMP's policy, and `thread_info` says which it is.
    prefer_passive_openmp()
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        import torch

        return configure_threads(torch.get_num_threads(), workers=workers, passive=False)
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    return configure_threads(max(1, _usable_cores() // processes - workers), workers=workers, passive=False)


def describe_threads(settings: ThreadSettings | None = None) -> str:
    """One line for `vivit info`: model threads, cores, OpenMP runtime and how its idle threads wait."""
    info = settings or thread_info()
    waiting = "idle threads sleep" if info.passive else "idle threads spin before sleeping (slow on a busy machine)"
    jobs = (
        f"; jobs with W decoding workers use {info.usable_cores} - W (at least 1)"
        if not os.environ.get("OMP_NUM_THREADS", "").strip()
        else "; kept by jobs (OMP_NUM_THREADS is set)"
    )
    return (
        f"{info.threads} for the model on {info.usable_cores} usable cores{jobs}; OpenMP {info.openmp or 'unknown'}, "
        f"wait policy {info.wait_policy} ({waiting})"
    )
