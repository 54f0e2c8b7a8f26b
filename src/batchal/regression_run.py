"""Simulated batch active learning for regression: ``batchal run --dataset diabetes`` (or ``friedman1``).

The regression counterpart of ``batchal.experiment``, kept apart from it (the classification
loop's run-file checks, training protocols and reports speak accuracy and classes). Data sets
that scikit-learn has offline:

- ``diabetes``: 442 patients, 10 features (real, shipped with scikit-learn);
- ``friedman1``: ``make_friedman1``, 1,000 points, 10 features of which 5 matter, noise sd 1
  (synthetic, generated from the run's seed).

Features and target are standardised; a random 20% of the rows (the seed's) is the test set,
the rest the pool. Each round a fresh MLP d-32-32-1 (ReLU, consistent MC dropout after each
hidden layer) is trained from scratch on the labels with Adam (full batch, weight decay); the
observation noise sigma^2 is the training residual variance, floored at ``noise_floor``.
Strategies: ``random``, ``regression_bald`` and ``regression_batchbald`` on K MC-dropout samples
of the pool's predictive means, ``regression_maxdet`` on the last-layer features (dropout off,
scaled to unit mean squared norm over the pool, noise ``maxdet_noise``), conditioned on the
labelled points' features (bmdal_reg's TP-mode). Rows: round, labelled, test_rmse
(the K-sample mean prediction), noise, acquired (pool positions), scores, seconds.

Resumable like every batchal run: ``config.json`` is checked against the run's settings,
``results.jsonl`` gets one row per round (fsynced), and a rerun continues after the last row
(the labelled set is replayed from the rows).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from batchal.acquire import SEED_EVALUATE, SEED_TRAIN, acquire, round_seed
from batchal.acquisition.registry import get_strategy, strategies_for
from batchal.bayesian.dropout import ConsistentMCDropout, mc_dropout
from batchal.run_files import RunFileError, append_row, atomic_write, read_config, read_results, regression_row_checker

REGRESSION_DATASETS = ("diabetes", "friedman1")
#: Rows (before the 20% test split) and what they are, for `batchal datasets`.
REGRESSION_SIZES = {"diabetes": (442, "10 features, disease progression (scikit-learn's, real)"),
                    "friedman1": (1_000, "10 features of which 5 matter, noise sd 1 (make_friedman1, synthetic)")}
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class RegressionConfig:
    dataset: str
    strategy: str = "regression_batchbald"
    acquisition_size: int = 10
    initial_size: int = 20
    budget: int = 100
    seed: int = 0
    mc_samples: int = 32
    hidden: int = 32
    dropout: float = 0.1
    steps: int = 200
    lr: float = 1e-2
    weight_decay: float = 0.1
    noise_floor: float = 0.05
    maxdet_noise: float = 0.1

    def __post_init__(self):
        if self.dataset not in REGRESSION_DATASETS:
            raise ValueError(f"a regression data set is one of {', '.join(REGRESSION_DATASETS)}; got {self.dataset!r}")
        allowed = strategies_for("regression")
        if self.strategy not in allowed:
            raise ValueError(f"strategy for a regression data set must be one of {', '.join(allowed)}; got {self.strategy!r}")
        for name in ("acquisition_size", "initial_size", "budget", "mc_samples", "hidden", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.budget < self.initial_size:
            raise ValueError(f"budget ({self.budget}) must be at least initial_size ({self.initial_size})")


def load_regression(name: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pool x, pool y, test x, test y), standardised, float32; the test split is the seed's."""
    from sklearn.datasets import load_diabetes, make_friedman1

    if name == "diabetes":
        x, y = load_diabetes(return_X_y=True)
    elif name == "friedman1":
        x, y = make_friedman1(n_samples=1_000, n_features=10, noise=1.0, random_state=seed)
    else:
        raise ValueError(f"a regression data set is one of {', '.join(REGRESSION_DATASETS)}; got {name!r}")
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    order = np.random.default_rng(seed).permutation(len(y))
    test, pool = order[: int(len(y) * TEST_FRACTION)], order[int(len(y) * TEST_FRACTION):]
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)
    return as_tensor(x[pool]), as_tensor(y[pool]), as_tensor(x[test]), as_tensor(y[test])


def _train(config: RegressionConfig, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(seed)
    h = config.hidden
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], h), torch.nn.ReLU(), ConsistentMCDropout(config.dropout),
                              torch.nn.Linear(h, h), torch.nn.ReLU(), ConsistentMCDropout(config.dropout), torch.nn.Linear(h, 1))
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    net.train()
    for _ in range(config.steps):
        optimiser.zero_grad()
        torch.nn.functional.mse_loss(net(x).squeeze(1), y).backward()
        optimiser.step()
    net.eval()
    with torch.no_grad():
        noise = max(float(torch.mean((net(x).squeeze(1) - y) ** 2)), config.noise_floor)
    return net, noise


def _mc_means(net: torch.nn.Module, x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    with torch.no_grad(), mc_dropout(net, k, seed=seed):
        return net(x).reshape(len(x), k).double()


class RegressionPredictions:
    """batchal.acquire's predictions of the regression MLP over ``x``: the K MC-dropout means, and
    its last hidden layer as features, scaled to unit root-mean-square norm over ``scale_over``
    (the pool) so that MaxDet's kernel noise means the same at every round."""

    def __init__(self, net: torch.nn.Module, x: torch.Tensor, scale_over: list[int]):
        self.net, self.x = net, x
        with torch.no_grad():
            phi = net[:5](x[scale_over]).double()
        self.scale = phi.pow(2).sum(1).mean().sqrt().clamp(min=1e-12)

    def means(self, positions, k, seed):
        return _mc_means(self.net, self.x[positions], k, seed)

    def features(self, positions):
        with torch.no_grad():
            return self.net[:5](self.x[positions]).double() / self.scale, None


def _check_config(run_dir: Path, config: RegressionConfig) -> None:
    path, new = run_dir / "config.json", asdict(config)
    if path.exists():
        old = read_config(path)
        old = {k: v for k, v in old.items() if k in new}  # the file also holds "task"
        diff = sorted(k for k in new if old.get(k) != new[k])
        if diff:
            raise ValueError(f"{run_dir} holds a run with a different configuration ({', '.join(diff)} differ); choose another output directory")
        return
    if (run_dir / "results.jsonl").exists() and (run_dir / "results.jsonl").stat().st_size:
        raise RunFileError(f"{run_dir / 'results.jsonl'} has rows but config.json is missing; restore it or choose another output directory")
    atomic_write(path, (json.dumps({**new, "task": "regression"}, indent=2) + "\n").encode())


def run_regression(config: RegressionConfig, run_dir, progress=None) -> list[dict]:
    """Run (or resume) one regression run; returns every row. ``progress(row)`` after each round."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, config)
    x, y, x_test, y_test = load_regression(config.dataset, config.seed)
    results = run_dir / "results.jsonl"
    rows = read_results(results, regression_row_checker(len(y)))
    g = torch.Generator().manual_seed(config.seed)
    labelled = torch.randperm(len(y), generator=g)[: config.initial_size].tolist()
    for row in rows:
        labelled += row.get("acquired", [])
    if rows and "stop_reason" in rows[-1]:
        return rows
    while True:
        round_ = len(rows)
        start = time.perf_counter()
        net, noise = _train(config, x[labelled], y[labelled], round_seed(config.seed, round_, SEED_TRAIN))
        train_seconds = time.perf_counter() - start
        prediction = _mc_means(net, x_test, config.mc_samples, round_seed(config.seed, round_, SEED_EVALUATE)).mean(1)
        row = {"round": round_, "labelled": len(labelled), "test_rmse": float(torch.sqrt(torch.mean((prediction - y_test.double()) ** 2))),
               "noise": noise, "acquired": [], "scores": [], "seconds": {"train": train_seconds, "select": 0.0}}
        taken = set(labelled)
        pool = [i for i in range(len(y)) if i not in taken]
        if len(labelled) >= config.budget or not pool:
            row["stop_reason"] = "budget" if len(labelled) >= config.budget else "pool_exhausted"
        else:
            b = min(config.acquisition_size, config.budget - len(labelled), len(pool))
            spec = get_strategy(config.strategy)
            # The protocol: feature-kernel strategies (MaxDet) take the fixed kernel noise, sample-based ones the fitted noise.
            protocol = {"noise": config.maxdet_noise if spec.needs_embeddings else noise}
            acquisition = acquire(config.strategy, RegressionPredictions(net, x, scale_over=pool), pool, b, labelled=labelled,
                                  seed=config.seed, round_=round_, mc_samples=config.mc_samples, protocol=protocol)
            selection = acquisition.selection
            row["seconds"]["select"] = acquisition.seconds["score"] + acquisition.seconds["select"]
            row["acquired"] = acquisition.picked
            row["scores"] = selection.scores.tolist()
            labelled += row["acquired"]
        append_row(results, row)
        rows.append(row)
        if progress is not None:
            progress(row)
        if "stop_reason" in row:
            return rows


def run_folder(out, config: RegressionConfig) -> Path:
    return Path(out) / config.dataset / f"{config.strategy}-b{config.acquisition_size}-seed{config.seed}"


def summary(results: dict[str, list[list[dict]]]) -> str:
    """A Markdown table: final labels and the median final test RMSE per strategy."""
    lines = ["| strategy | seeds | final labels | final test RMSE (median) |", "|---|---|---|---|"]
    for strategy, runs in results.items():
        finals = sorted(r[-1]["test_rmse"] for r in runs)
        lines.append(f"| {strategy} | {len(runs)} | {runs[0][-1]['labelled']} | {finals[(len(finals) - 1) // 2]:.4f} |")
    return "\n".join(lines)


def run_from_cli(settings: dict, names: list[str], seeds: list[int], out: Path, ignored: Optional[list[str]] = None) -> int:
    """``batchal run`` on a regression data set (the CLI's settings that apply; others named)."""
    fields = {"acquisition_size", "initial_size", "budget", "mc_samples"}
    kwargs = {k: v for k, v in settings.items() if k in fields}
    if ignored:
        print(f"note: {', '.join(sorted(ignored))} do(es) not apply to a regression data set and are ignored", flush=True)
    configs = [RegressionConfig(dataset=settings["dataset"], strategy=s, seed=seed, **kwargs) for s in names for seed in seeds]
    print(f"{settings['dataset']} (regression): strategies {', '.join(names)}; seeds {', '.join(map(str, seeds))}; results in {out}", flush=True)
    results: dict[str, list[list[dict]]] = {s: [] for s in names}
    for config in configs:
        rows = run_regression(config, run_folder(out, config),
                              progress=lambda r, c=config: print(f"{c.strategy} seed {c.seed} round {r['round']}: {r['labelled']} labels, "
                                                                 f"test RMSE {r['test_rmse']:.4f}", flush=True))
        results[config.strategy].append(rows)
    print()
    print(summary(results))
    return 0
