"""How many CPU threads batchal's work uses: one policy, decided here, for the command line,
the experiment runner, labelling retraining, benchmarks and Ray workers.

Why one thread by default. batchal's models are small (the papers' CNNs and MLPs, batches of
64) and its selections are sequences of modest tensor operations. On such work torch's
intra-op threads buy little on an idle machine and cost a great deal on a busy one: every
small operation waits for all of its threads, and a thread that the scheduler has parked
behind another job stalls the rest. Measured on 2 cores (`results/benchmarks/contention.txt`):
with two CPU-bound background processes the main job took many times its fair share with torch's
default of 2 threads and stayed near its fair share with 1. Parallelism that does pay comes
from several processes (the runner's `--workers`, Ray tasks), one thread each.

A second reason: a seed fixes the results *for a given thread count*. Floating-point
reductions split across threads are summed in another order, so 1 and 2 threads can train
slightly different models from the same seed. A default of 1 thread, independent of the
machine's cores, makes the same seed give the same numbers on one machine whatever its load;
across CPUs the numbers can still differ at one thread (their vectorised kernels differ: the
demo's BatchBALD ended at 0.9306 on another machine against 0.9417 here).

The count comes from, in order: the ``threads`` argument (``--threads`` on the command line),
``$BATCHAL_THREADS``, else 1. ``auto`` means torch's own default (one per core).
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

#: Where a thread count can be set besides the argument.
ENV_VAR = "BATCHAL_THREADS"
DEFAULT_THREADS = 1


def resolve_threads(threads: Union[int, str, None] = None) -> int:
    """The thread count to use: ``threads``, else ``$BATCHAL_THREADS``, else 1; ``auto`` is the
    number of cores. A bad value raises ``ValueError`` naming where it came from."""
    source = "threads"
    if threads is None:
        threads = os.environ.get(ENV_VAR)
        source = f"${ENV_VAR}"
        if threads is None or threads == "":
            return DEFAULT_THREADS
    if isinstance(threads, str):
        text = threads.strip().lower()
        if text == "auto":
            return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
        if not text.isdigit():
            raise ValueError(f"{source} must be a positive integer or 'auto', got {threads!r}")
        threads = int(text)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"{source} must be a positive integer or 'auto', got {threads!r}")
    return threads


def use_threads(threads: Union[int, str, None] = None) -> int:
    """Apply the policy to this process: torch's intra-op threads and the BLAS/OpenMP pools that
    numpy and scikit-learn use (through threadpoolctl, which scikit-learn ships with). Returns
    the count applied. Call it once at a process's entry point (the CLI, a worker, a script);
    library functions never change it behind the caller's back."""
    count = resolve_threads(threads)
    torch.set_num_threads(count)
    # Child processes (data loaders, subprocess workers) inherit the same limit.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(count)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=count)
    except ImportError:  # pragma: no cover - scikit-learn always brings threadpoolctl
        pass
    return count


def thread_note(threads: Optional[int] = None) -> str:
    """A short line for result files: the thread count this process computes with."""
    return f"torch threads {threads if threads is not None else torch.get_num_threads()} ({ENV_VAR}={os.environ.get(ENV_VAR, 'unset')})"
