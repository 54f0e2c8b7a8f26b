"""``batchal score``: every per-point score of a pool, streamed shard by shard into Parquet.

The pool is cut into shards of ``shard_size`` consecutive positions. Each shard is read, scored
with K consistent-dropout masks drawn from ``seed`` (the same masks in every process: they
depend only on the seed and the layer shapes, never on the shard, the batch size or the
worker) and written atomically; a rerun skips the shards already written. With Ray
(``ray_address``) the shards flow through Ray Data ``map_batches`` to a pool of actors, one per
worker, each holding the model; without it the same function runs in-process, shard after
shard, and writes the same files.

Folder layout (``out``):
- ``manifest.json``: the job, the pool (kind, path, items), shard size and count, K and C,
  and ``complete`` once every shard and the merge are done;
- ``scores/shard-NNNNN.parquet``: ``position``, ``id`` and the six per-point scores (entropy,
  bald, variation_ratios, mean_std, least_confidence, margin); with ``embeddings`` also
  ``embedding`` (penultimate features) and ``prediction`` (log-probabilities with dropout off),
  what BADGE and Coreset need;
- with ``keep_log_probs=M``: ``top/shard-NNNNN.parquet`` (each shard's M items of highest BALD
  with their K x C log-probabilities) and ``log_probs.parquet``, the M of highest BALD over the
  whole pool in position order: BatchBALD's input, equal to ``prefilter=M``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from batchal.acquisition.scores import SCORE_FUNCTIONS
from batchal.checks import check_positive_int
from batchal.bayesian.predict import predict_embeddings, predict_log_probs
from batchal.data.pools import ImageOptions, Pool, open_pool
from batchal.models import load_model

SCORE_COLUMNS = list(SCORE_FUNCTIONS)


@dataclass
class ScoreJob:
    """Everything that defines a scored folder (a rerun must match it)."""

    pool: str
    model: str
    mc_samples: int
    seed: int
    weights: Optional[str] = None
    num_classes: Optional[int] = None
    embeddings: bool = False
    keep_log_probs: Optional[int] = None
    shard_size: int = 4096
    batch_size: int = 256
    image_size: int = 28
    grayscale: bool = True
    column: Optional[str] = None
    input_shape: Optional[list] = None
    skip: Optional[list] = None  # image ids left out: the ones the driver's check found unreadable

    def __post_init__(self):
        # Paths are resolved here, on the driver: a Ray worker started in another folder (another
        # node, say) resolves a relative path against its own working directory.
        self.pool = str(Path(self.pool).resolve()) if self.pool else self.pool
        if self.weights:
            self.weights = str(Path(self.weights).resolve())
        module, sep, factory = str(self.model).rpartition(":")
        if sep and module.endswith(".py"):
            self.model = f"{Path(module).resolve()}:{factory}"
        check_positive_int(self.mc_samples, "--mc-samples")
        check_positive_int(self.shard_size, "--shard-size")
        check_positive_int(self.batch_size, "--batch-size")
        check_positive_int(self.seed, "--seed", minimum=0)
        if self.keep_log_probs is not None:
            check_positive_int(self.keep_log_probs, "--keep-log-probs")

    def open_pool(self, check: bool = False) -> Pool:
        """The pool; with ``check`` (the driver, once) image folders leave out and list the images
        that do not open, and ``skip`` records them for the workers, which then only exclude them."""
        shape = tuple(self.input_shape) if self.input_shape else None
        pool = open_pool(self.pool, column=self.column, options=ImageOptions(self.image_size, self.grayscale), input_shape=shape,
                         exclude=self.skip or (), check=check)
        if check and getattr(pool, "skipped", None) is not None:
            self.skip = sorted(set(self.skip or ()) | {entry["id"] for entry in pool.skipped})
        return pool

    def build_model(self, pool: Pool) -> torch.nn.Module:
        return load_model(self.model, tuple(pool.read(0, 1).shape[1:]), self.num_classes, self.weights)

    def identity(self) -> dict:
        """The settings that decide the output (batch size and paths of weights do not)."""
        d = dataclasses.asdict(self)
        d.pop("batch_size")
        d.pop("weights")  # the same weights by another path (model.pt, ./model.pt, a copy) are the same job
        d["weights_sha256"] = _sha256(self.weights) if self.weights else None
        d["pool"] = str(Path(self.pool).resolve())
        d["skip"] = sorted(self.skip) if self.skip else None  # none skipped: the same whether listed empty or not
        return d


def _sha256(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.parquet"


def _write_atomically(table, path: Path) -> None:
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def score_shard(job: ScoreJob, model: torch.nn.Module, pool: Pool, shard: int, out: Path) -> int:
    """Score one shard and write its files (``top`` first, then ``scores``, which marks it done)."""
    import pyarrow as pa

    start, stop = shard * job.shard_size, min((shard + 1) * job.shard_size, len(pool))
    x = pool.read(start, stop)
    ids = pool.ids(start, stop)
    log_probs = predict_log_probs(model, x, job.mc_samples, job.batch_size, seed=job.seed)
    columns = {"position": pa.array(np.arange(start, stop, dtype=np.int64)), "id": pa.array(ids, pa.string())}
    scores = {name: fn(log_probs).numpy() for name, fn in SCORE_FUNCTIONS.items()}
    columns.update({name: pa.array(values) for name, values in scores.items()})
    if job.embeddings:
        embedding, prediction = predict_embeddings(model, x, job.batch_size)
        columns["embedding"] = _list_column(embedding.numpy())
        columns["prediction"] = _list_column(prediction[:, 0].numpy())
    if job.keep_log_probs is not None:
        m = min(job.keep_log_probs, stop - start)
        top = torch.from_numpy(scores["bald"]).topk(m).indices.sort().values.numpy()
        kept = pa.table({"position": pa.array(top + start, pa.int64()), "bald": pa.array(scores["bald"][top]),
                         "log_probs": _list_column(log_probs[top].flatten(1).numpy())})
        _write_atomically(kept, out / "top" / shard_name(shard))
    _write_atomically(pa.table(columns), out / "scores" / shard_name(shard))
    return stop - start


def _list_column(array_n_d: np.ndarray):
    import pyarrow as pa

    values = pa.array(np.ascontiguousarray(array_n_d, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(values, array_n_d.shape[1])


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception Ray carried across: the first ValueError (batchal's DataError
    included) along its ``cause`` / ``__cause__`` / ``__context__`` chain, else the innermost."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ValueError) and type(exc).__module__.startswith("batchal"):
            return exc
        inner = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


class _ShardScorer:
    """A Ray Data actor: loads the pool and the model once, then scores the shards it is given."""

    def __init__(self, job: dict, out: str, threads: float):
        from batchal.distributed.cluster import use_threads

        use_threads(threads)
        self.job, self.out = ScoreJob(**job), Path(out)
        self.pool = self.job.open_pool()
        self.model = self.job.build_model(self.pool)

    def __call__(self, batch: dict) -> dict:
        import resource

        rows, errors = [], []
        for s in batch["shard"]:
            try:
                rows.append(score_shard(self.job, self.model, self.pool, int(s), self.out))
                errors.append("")
            except ValueError as exc:  # a bad item or setting (DataError included): reported to the driver in one line
                rows.append(0)
                errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this worker's peak so far (MiB)
        return {"shard": np.asarray(batch["shard"], dtype=np.int64), "rows": np.asarray(rows, dtype=np.int64),
                "peak_rss_mib": np.full(len(rows), peak), "error": np.asarray(errors, dtype=str)}


def score_pool(
    job: ScoreJob,
    out,
    *,
    ray_address: Optional[str] = None,
    workers: Optional[int] = None,
    cpus_per_worker: float = 1.0,
    progress: Optional[Callable[[int, int, int], None]] = None,
) -> dict:
    """Score the pool into ``out`` (resuming from its finished shards); returns the manifest.

    progress(shards_done, shards_total, items_done) after each shard.
    """
    out = Path(out)
    previous = _read_manifest_skips(out)
    if previous is not None:
        job.skip = previous  # a resumed job keeps the pool it started with
    pool = job.open_pool(check=previous is None)
    n = len(pool)
    shards = (n + job.shard_size - 1) // job.shard_size
    # A bad model, weights, input or cluster address fails here, before anything is written.
    model = job.build_model(pool)
    if ray_address is not None:
        from batchal.distributed.cluster import connect

        ray = connect(ray_address)
    manifest = _start_manifest(job, pool, out, shards)
    done = {s for s in range(shards) if (out / "scores" / shard_name(s)).is_file()}
    todo = [s for s in range(shards) if s not in done]
    items = sum(min(job.shard_size, n - s * job.shard_size) for s in done)
    if progress:
        progress(len(done), shards, items)
    if todo and ray_address is None:
        for s in todo:
            items += score_shard(job, model, pool, s, out)
            done.add(s)
            if progress:
                progress(len(done), shards, items)
    elif todo:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker))
        ds = ray.data.from_items([{"shard": s} for s in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            _ShardScorer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, len(todo))), num_cpus=cpus_per_worker,
            fn_constructor_kwargs={"job": dataclasses.asdict(job), "out": str(out.resolve()), "threads": cpus_per_worker},
        )  # Ray Data restarts lost actors and retries their shards (writes are atomic, so a retry is harmless)
        peak = 0.0
        try:
            first_error = None
            for row in ds.iter_rows():  # consumed to the end: closing Ray Data's iterator early waits on its actors
                if row.get("error"):
                    first_error = first_error or row["error"]
                    continue
                done.add(int(row["shard"]))
                items += int(row["rows"])
                peak = max(peak, float(row["peak_rss_mib"]))
                if progress:
                    progress(len(done), shards, items)
            if first_error:
                raise ValueError(f"scoring on Ray failed: {first_error} (finished shards are kept: fix it and run the "
                                 "same command again to resume)")
        except ValueError:
            raise
        except Exception as exc:  # Ray wraps a worker's error in pages of traceback: one line, the cause's own
            cause = _root_cause(exc)
            if isinstance(cause, ValueError):  # DataError and batchal's own checks: the item or setting at fault
                raise ValueError(f"scoring on Ray failed: {str(cause).splitlines()[0]} (finished shards are kept: fix it "
                                 "and run the same command again to resume)") from None
            raise
        manifest["worker_peak_rss_mib"] = round(peak, 1)  # informational: the largest worker's peak memory
    missing = [s for s in range(shards) if not (out / "scores" / shard_name(s)).is_file()]
    if missing:
        raise ValueError(f"{out}: shards {missing[:5]} were not written; run the same command again to resume")
    if job.keep_log_probs is not None:
        manifest["kept"] = _merge_top(out, shards, job.keep_log_probs)
    manifest["complete"] = True
    _write_json(out / "manifest.json", manifest)
    return manifest


def _read_manifest_skips(out: Path) -> Optional[list]:
    """The unreadable images a started job listed (None: no job started here)."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, NotADirectoryError):
        return None
    skipped = manifest.get("skipped")
    return [entry["id"] for entry in skipped] if isinstance(skipped, list) else None


def _start_manifest(job: ScoreJob, pool: Pool, out: Path, shards: int) -> dict:
    (out / "scores").mkdir(parents=True, exist_ok=True)
    if job.keep_log_probs is not None:
        (out / "top").mkdir(exist_ok=True)
    path = out / "manifest.json"
    fresh = {"job": job.identity(), "pool": pool.describe(), "shards": shards, "shard_size": job.shard_size,
             "skipped": list(getattr(pool, "skipped", None) or [{"id": i, "reason": "unreadable when the job started"} for i in job.skip or []]),
             "columns": ["position", "id"] + SCORE_COLUMNS + (["embedding", "prediction"] if job.embeddings else []),
             "complete": False, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a readable manifest ({exc}); choose another --out") from None
        if isinstance(old.get("job"), dict):
            old["job"].pop("weights", None)  # folders scored before weights were compared by content only
            old["job"].setdefault("skip", fresh["job"].get("skip"))
        if old.get("job") != fresh["job"] or old.get("pool", {}).get("items") != len(pool):
            differ = sorted(k for k in set(old.get("job", {})) | set(fresh["job"]) if old.get("job", {}).get(k) != fresh["job"].get(k))
            raise ValueError(f"{out} holds scores of another job ({', '.join(differ) or 'pool size'} differ); choose another --out")
        return {**old, "complete": False}
    _write_json(path, fresh)
    return fresh


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _merge_top(out: Path, shards: int, m: int) -> int:
    """The m items of highest BALD over every shard's own top m (a running top m, so memory is
    two shards' worth), written in position order to ``log_probs.parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    best = None
    for s in range(shards):
        table = pq.read_table(out / "top" / shard_name(s))
        best = table if best is None else pa.concat_tables([best, table])
        if best.num_rows > m:
            bald = torch.from_numpy(best.column("bald").to_numpy())
            best = best.take(pa.array(bald.topk(m).indices.numpy()))
    order = np.argsort(best.column("position").to_numpy(), kind="stable")
    best = best.take(pa.array(order))
    _write_atomically(best, out / "log_probs.parquet")
    return best.num_rows
