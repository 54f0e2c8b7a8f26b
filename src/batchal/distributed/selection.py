"""``batchal select``: a batch from a scored folder (``batchal score``'s output), shard by shard.

- top-b of any per-point score: each shard's own top b, then the best b of those (ties to the
  lowest position, as ``batchal.select``);
- ``random``: b positions from the seed, as ``batchal.select``;
- ``power_bald``: Gumbel-top-b, each shard adding the noise of its own positions
  (``kdpp.gumbel_noise``, the same noise ``batchal.select`` draws);
- ``badge`` and ``coreset``: the k-means++ / k-center loop keeps one number per item (its
  distance to the nearest centre) while the features stay with their shard: in-process they are
  read one shard at a time, on Ray each worker holds its share of the shards and returns
  distances to the newest centre;
- ``batchbald``: BatchBALD over the kept top-M log-probabilities, which is ``prefilter=M``.

With the same seed every strategy picks what ``batchal.select`` picks on the same inputs in one
process (tested).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from batchal.acquisition import badge as _badge
from batchal.acquisition.kdpp import gumbel_noise, noise_key, power_log_weights
from batchal.acquisition.registry import get_strategy, select, strategies
from batchal.checks import check_batch_size, check_positive_float, check_random_state
from batchal.distributed.scoring import SCORE_COLUMNS, shard_name

def sharded_strategies() -> list[str]:
    """The strategies ``batchal select`` runs over a scored folder: those whose registry record
    says how (``Strategy.sharded``), with their score column among the folder's."""
    return [name for name in strategies() if get_strategy(name).sharded is not None
            and (get_strategy(name).score_column is None or get_strategy(name).score_column in SCORE_COLUMNS)]


class ScoredFolder:
    """A complete ``batchal score`` output folder."""

    def __init__(self, path):
        self.path = Path(path)
        manifest = self.path / "manifest.json"
        if not manifest.is_file():
            raise ValueError(f"{self.path}: no manifest.json; expected a folder written by 'batchal score'")
        self.manifest = json.loads(manifest.read_text())
        if not self.manifest.get("complete"):
            raise ValueError(f"{self.path}: scoring is not complete; run the same 'batchal score' command again to finish it")
        self.shards = self.manifest["shards"]
        self.size = self.manifest["pool"]["items"]

    def read(self, shard: int, columns: list[str]):
        import pyarrow.parquet as pq

        return pq.read_table(self.path / "scores" / shard_name(shard), columns=columns)

    def has(self, column: str) -> bool:
        return column in self.manifest["columns"]


def _top(keys: np.ndarray, positions: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The b largest keys, ties to the lowest position."""
    order = np.lexsort((positions, -keys))[:b]
    return keys[order], positions[order]


def select_scored(
    path,
    strategy: str,
    batch_size: int,
    seed=None,
    *,
    beta: float = 1.0,
    num_samples: int = 40_000,
    ray_address: Optional[str] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> dict:
    """Select from a scored folder; returns {"strategy", "batch_size", "seed", "picks": [{rank, id, position, score}]}."""
    folder = ScoredFolder(path)
    allowed = sharded_strategies()
    if strategy not in allowed:
        raise ValueError(f"--strategy must be one of {', '.join(allowed)} over a scored folder; got {strategy!r}")
    spec = get_strategy(strategy)
    b = check_batch_size(batch_size, folder.size)
    generator = check_random_state(seed)
    if spec.needs_embeddings and not folder.has("embedding"):
        raise ValueError(f"{folder.path} has no embeddings; score with --embeddings for {strategy}")
    if spec.sharded == "random":
        positions = torch.randperm(folder.size, generator=generator)[:b].numpy()
        scores = np.zeros(b)
    elif spec.sharded in ("top_b", "power"):
        power = check_positive_float(beta, "beta", allow_zero=True) if spec.sharded == "power" else None
        positions, scores = _top_b(folder, spec.score_column, b, generator, power, progress)
    elif spec.sharded == "prefiltered_batchbald":
        positions, scores = _batchbald(folder, strategy, b, generator, num_samples)
    else:
        holders = _holders(folder, spec.sharded == "kmeans_pp", ray_address)
        run = _kmeans_plus_plus if spec.sharded == "kmeans_pp" else _k_center
        positions, scores = run(holders, folder.size, b, generator, progress)
    ids = _ids_of(folder, positions)
    return {"strategy": strategy, "batch_size": b, "seed": seed if isinstance(seed, int) else None,
            "scored": str(folder.path), "picks": [{"rank": r, "id": ids[int(p)], "position": int(p), "score": float(s)}
                                                  for r, (p, s) in enumerate(zip(positions, scores))]}


def _top_b(folder, column, b, generator, beta, progress):
    """Top-b of a score column; with ``beta`` (not None), Gumbel-top-b on column^beta (PowerBALD)."""
    key = noise_key(generator) if beta is not None else None
    best_keys, best_pos, best_scores = np.empty(0), np.empty(0, dtype=np.int64), np.empty(0)
    for s in range(folder.shards):
        table = folder.read(s, ["position", column])
        positions, values = table.column("position").to_numpy(), table.column(column).to_numpy()
        if key is not None:
            values = np.clip(values, 0, None)
            start = int(positions[0])
            weights = power_log_weights(torch.from_numpy(values), beta)
            keys = (weights + gumbel_noise(key, start, start + len(positions))).numpy()
        else:
            keys = values
        keys = np.concatenate([best_keys, keys])
        positions = np.concatenate([best_pos, positions])
        values = np.concatenate([best_scores, values])
        order = np.lexsort((positions, -keys))[:b]
        best_keys, best_pos, best_scores = keys[order], positions[order], values[order]
        if progress:
            progress(s + 1, folder.shards)
    return best_pos, best_scores


def _batchbald(folder, strategy, b, generator, num_samples):
    import pyarrow.parquet as pq

    path = folder.path / "log_probs.parquet"
    if not path.is_file():
        raise ValueError(f"{folder.path} kept no log-probabilities; score with --keep-log-probs M for batchbald")
    table = pq.read_table(path)
    positions = table.column("position").to_numpy()
    flat = table.column("log_probs").combine_chunks().flatten().to_numpy().reshape(len(positions), -1)
    K = folder.manifest["job"]["mc_samples"]
    log_probs = torch.from_numpy(flat.reshape(len(positions), K, -1).copy())
    if b > len(positions):
        raise ValueError(f"--batch-size {b} is larger than the {len(positions)} items kept with --keep-log-probs")
    selection = select(strategy, b, log_probs_N_K_C=log_probs, seed=generator, num_samples=num_samples)
    return positions[selection.indices.numpy()], selection.scores.numpy()


class ShardHolder:
    """The features of some shards (BADGE's factors a, h, or Coreset's features) and the per-step
    work on them; runs in-process or as a Ray actor."""

    def __init__(self, path: str, shards: list[int], gradient: bool, threads: float = 1):
        """gradient: hold BADGE's gradient-embedding factors (a, h) instead of the features."""
        import pyarrow.parquet as pq

        from batchal.distributed.cluster import use_threads

        if threads:
            use_threads(threads)
        self.parts = []
        for s in shards:
            table = pq.read_table(Path(path) / "scores" / shard_name(s), columns=["position", "embedding", "prediction"])
            n = table.num_rows
            h = torch.from_numpy(table.column("embedding").combine_chunks().flatten().to_numpy().reshape(n, -1).copy())
            lp = torch.from_numpy(table.column("prediction").combine_chunks().flatten().to_numpy().reshape(n, 1, -1).copy())
            positions = table.column("position").to_numpy()
            if gradient:
                g = _badge.gradient_embeddings(lp, h)
                self.parts.append((positions, g.a_N_C, g.h_N_D))
            else:
                self.parts.append((positions, None, h.double()))

    def positions(self) -> np.ndarray:
        return np.concatenate([p for p, _, _ in self.parts])

    def badge_norms(self) -> np.ndarray:
        return np.concatenate([((a**2).sum(1) * (h**2).sum(1)).numpy() for _, a, h in self.parts])

    def factors(self, position: int):
        for positions, a, h in self.parts:
            i = np.searchsorted(positions, position)
            if i < len(positions) and positions[i] == position:
                return (None if a is None else a[i].clone()), h[i].clone()
        return None

    def badge_inner(self, a_i, h_i) -> np.ndarray:
        return np.concatenate([((a @ a_i) * (h @ h_i)).numpy() for _, a, h in self.parts])

    def sums(self) -> torch.Tensor:
        return sum(h.sum(0) for _, _, h in self.parts)

    def squared_norms(self) -> np.ndarray:
        return np.concatenate([(h**2).sum(1).numpy() for _, _, h in self.parts])

    def squared_distances(self, centre) -> np.ndarray:
        return np.concatenate([((h - centre) ** 2).sum(1).numpy() for _, _, h in self.parts])

    def dots(self, x_i) -> np.ndarray:
        return np.concatenate([(h @ x_i).numpy() for _, _, h in self.parts])


class _Local:
    """ShardHolders called in-process, with the same call shape as Ray actors."""

    def __init__(self, holders):
        self.holders = holders

    def map(self, method: str, *args) -> list:
        return [getattr(h, method)(*args) for h in self.holders]


class _Remote:
    def __init__(self, ray, actors):
        self.ray, self.actors = ray, actors

    def map(self, method: str, *args) -> list:
        return self.ray.get([getattr(a, method).remote(*args) for a in self.actors])


def _holders(folder: ScoredFolder, gradient: bool, ray_address: Optional[str]):
    if ray_address is None:
        # In-process: every shard in this process; the loop's working memory is O(N).
        return _Local([ShardHolder(str(folder.path), list(range(folder.shards)), gradient, threads=0)])
    from batchal.distributed.cluster import connect

    ray = connect(ray_address)
    workers = max(1, min(folder.shards, int(ray.cluster_resources().get("CPU", 1))))
    groups = [list(range(w, folder.shards, workers)) for w in range(workers)]
    actor = ray.remote(num_cpus=1)(ShardHolder)
    return _Remote(ray, [actor.remote(str(folder.path.resolve()), g, gradient, 1) for g in groups])


def _gather(holders, n: int, method: str, *args) -> np.ndarray:
    """A per-item vector assembled in position order from every holder's share."""
    out = np.empty(n, dtype=np.float64)
    for positions, values in zip(holders.map("positions"), holders.map(method, *args)):
        out[positions] = values
    return out


def _factors(holders, position: int):
    return next(f for f in holders.map("factors", position) if f is not None)


def _kmeans_plus_plus(holders, n, b, generator, progress):
    """``badge.kmeans_plus_plus`` with the factors spread over shard holders (same arithmetic)."""
    norms = torch.from_numpy(_gather(holders, n, "badge_norms"))
    first = int(norms.argmax())
    indices, scores = [first], [float(norms[first])]
    available = torch.ones(n, dtype=torch.bool)
    available[first] = False
    distances = torch.full((n,), float("inf"), dtype=torch.float64)
    newest = first
    for step in range(1, b):
        a_i, h_i = _factors(holders, newest)
        inner = torch.from_numpy(_gather(holders, n, "badge_inner", a_i, h_i))
        to_newest = (norms + norms[newest] - 2 * inner).clamp_(min=0)
        torch.minimum(distances, to_newest, out=distances)
        weights = torch.where(available, distances, torch.zeros_like(distances))
        if not float(weights.sum()) > 0:
            weights = available.double()
        newest = int(torch.multinomial(weights, 1, generator=generator))
        indices.append(newest)
        scores.append(float(distances[newest]))
        available[newest] = False
        if progress:
            progress(step + 1, b)
    return np.asarray(indices), np.asarray(scores)


def _k_center(holders, n, b, generator, progress):
    """``coreset.k_center_greedy`` (no labelled set) with the features spread over shard holders."""
    sq_norms = torch.from_numpy(_gather(holders, n, "squared_norms"))
    mean = sum(holders.map("sums")) / n
    distances = torch.from_numpy(_gather(holders, n, "squared_distances", mean))
    available = torch.ones(n, dtype=torch.bool)
    indices, scores = [], []
    for step in range(b):
        pick = int(torch.where(available, distances, torch.full_like(distances, -1.0)).argmax())
        indices.append(pick)
        scores.append(float(distances[pick].sqrt()))
        available[pick] = False
        _, x_i = _factors(holders, pick)
        to_pick = (sq_norms + sq_norms[pick] - 2 * torch.from_numpy(_gather(holders, n, "dots", x_i))).clamp_(min=0)
        if step == 0:
            distances = to_pick
        else:
            torch.minimum(distances, to_pick, out=distances)
        distances[pick] = 0.0
        if progress:
            progress(step + 1, b)
    return np.asarray(indices), np.asarray(scores)


def _ids_of(folder: ScoredFolder, positions) -> dict:
    wanted = {int(p) for p in positions}
    shard_size = folder.manifest["shard_size"]
    ids = {}
    for s in sorted({p // shard_size for p in wanted}):
        table = folder.read(s, ["position", "id"])
        for p, i in zip(table.column("position").to_numpy(), table.column("id").to_pylist()):
            if int(p) in wanted:
                ids[int(p)] = i
    return ids
