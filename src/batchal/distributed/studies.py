"""``batchal run --ray``: every run of a study as a Ray task with its own CPUs (and GPU share).

Each task calls ``run_experiment`` on its own run folder, exactly as the in-process loop does,
so the folders, ``config.json`` and ``results.jsonl`` are those of a run without Ray, an
unfinished run resumes, and a run that fails is reported by name while the others finish.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional

from batchal.experiment import ExperimentConfig, run_experiment


def run_one(config: dict, run_dir: str, threads: float) -> list[dict]:
    """One run in a process of its own (a Ray task, a worker process): its thread count, then
    ``run_experiment`` on its folder, as in-process."""
    from batchal.distributed.cluster import use_threads

    use_threads(threads)
    return run_experiment(ExperimentConfig(**config), Path(run_dir))


@dataclasses.dataclass
class RunOutcome:
    name: str
    rows: Optional[list[dict]] = None
    error: Optional[str] = None


def run_study(
    runs: dict[str, tuple[ExperimentConfig, Path]],
    address: str,
    *,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
    on_done: Optional[Callable[[RunOutcome], None]] = None,
) -> dict[str, RunOutcome]:
    """Run every (name -> (config, folder)) as a Ray task; returns each run's outcome by name."""
    from batchal.distributed.cluster import connect

    if not cpus_per_run > 0:
        raise ValueError(f"--cpus-per-run must be > 0, got {cpus_per_run!r}")
    if not 0 <= gpus_per_run:
        raise ValueError(f"--gpus-per-run must be >= 0 (fractions share a GPU), got {gpus_per_run!r}")
    ray = connect(address)
    if gpus_per_run > 0 and ray.cluster_resources().get("GPU", 0) <= 0:
        raise ValueError(f"--gpus-per-run {gpus_per_run} but the cluster at {address} has no GPU")
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=1, retry_exceptions=False)(run_one)
    pending = {task.remote(config.to_dict(), str(Path(folder).resolve()), cpus_per_run): name for name, (config, folder) in runs.items()}
    outcomes = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        name = pending.pop(ready[0])
        try:
            outcome = RunOutcome(name, rows=ray.get(ready[0]))
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            outcome = RunOutcome(name, error=f"{type(cause).__name__}: {cause}")
        except ray.exceptions.RayError as exc:  # a worker or node lost twice
            outcome = RunOutcome(name, error=f"{type(exc).__name__}: {exc}")
        outcomes[name] = outcome
        if on_done:
            on_done(outcome)
    return outcomes
