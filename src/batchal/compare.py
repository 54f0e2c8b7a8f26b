"""Does active learning pay on my data? ``batchal compare``: the loop simulated on data that is
already labelled, under several strategies and seeds, read with the field's measures and
honest uncertainty.

The measures (all from the runs' rows; each run is a ``batchal run`` run, resumable):

- **AUBC**, the area under the budget curve: the trapezoid of test accuracy over the labels from
  the initial set to the budget, divided by that range (an accuracy, higher is better);
- **labels to a target**, the first label count whose model reaches it; the targets are 95% and
  99% of the accuracy of a model trained on the whole labelled pool with the same protocol
  (measured here, once per seed);
- **labels saved against random** at each target: per seed, random's labels minus the
  strategy's (a run that never gets there counts as the budget plus one batch, so a saving is
  then a lower bound), averaged over seeds, with a 95% bootstrap interval over the seeds;
- **paired tests across seeds** of each strategy's AUBC against random's, Holm-corrected over
  the strategies of a batch size;
- **Lu et al.'s deficiency**: sum over the label counts of (full-pool accuracy - the strategy's)
  over the same sum for random (below 1: better than random);
- at the budget, **macro-F1** (with its interval), each class's **recall**, and the labels until
  every class had been labelled (**minority discovery**): what rare classes get.

The verdict says a strategy saves labels only when its AUBC beats random's after Holm's
correction; otherwise "no evidence that active learning saves labels on this data".
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from batchal.significance import holm_adjusted, paired_p

#: Targets, as fractions of the full-pool model's accuracy (the default; ``--targets``). The first is the verdict's.
TARGETS = (0.95, 0.99)
BOOTSTRAP = 2000


def curve_of(rows: list[dict]) -> dict[int, float]:
    """Label count -> test accuracy of a run."""
    return {int(r["labelled"]): float(r["test_accuracy"]) for r in rows}


def aubc(curve: dict[int, float], start: int, end: int) -> float:
    """Area under the budget curve over [start, end], normalised by its width (trapezoid on the run's counts)."""
    counts = sorted(c for c in curve if start <= c <= end)
    if len(counts) < 2:
        return curve[counts[0]] if counts else math.nan
    x = np.array(counts, float)
    y = np.array([curve[c] for c in counts])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / (x[-1] - x[0]))


def labels_to(curve: dict[int, float], target: float) -> Optional[int]:
    """The first label count whose accuracy reaches ``target``; None if none does."""
    return next((c for c in sorted(curve) if curve[c] >= target), None)


def deficiency(curve: dict[int, float], random_curve: dict[int, float], full: float) -> float:
    """Lu et al.'s deficiency: sum (full - acc) over sum (full - random's acc), on the shared counts."""
    counts = sorted(set(curve) & set(random_curve))
    below = sum(max(full - random_curve[c], 0.0) for c in counts)
    return float(sum(max(full - curve[c], 0.0) for c in counts) / below) if below > 0 else math.nan


def bootstrap_mean(values: list[float], seed: int = 0, draws: int = BOOTSTRAP) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its 95% percentile-bootstrap interval over the values (seeds)."""
    v = np.asarray(values, float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(draws, len(v)))].mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


@dataclasses.dataclass
class Setting:
    """One batch size's runs: curves[strategy][seed], the full-pool accuracy per seed."""

    batch_size: int
    initial: int
    budget: int
    curves: dict[str, dict[int, dict[int, float]]]
    full: dict[int, float]
    #: Per strategy and seed, the last row's macro-F1, per-class recall and the labels until every class was seen.
    final: dict[str, dict[int, dict]] = dataclasses.field(default_factory=dict)
    #: The targets, as fractions of the full-pool accuracy; the first is the verdict's.
    targets: tuple[float, ...] = TARGETS


def discovery(initial_labels: list[int], rows: list[dict], classes: int) -> Optional[int]:
    """Labels until every class has been labelled at least once (minority discovery); None if never."""
    seen = set(initial_labels)
    if len(seen) >= classes:
        return len(initial_labels)
    for row in rows:
        for n, label in enumerate(row["acquired_labels"], start=1):
            seen.add(label)
            if len(seen) >= classes:
                return row["labelled"] + n
    return None


def final_of(rows: list[dict], initial_labels: list[int], classes: int) -> dict:
    last = rows[-1]
    return {"macro_f1": last.get("test_macro_f1"), "recall": last.get("test_recall"),
            "discovery": discovery(initial_labels, rows, classes)}


def analyse(setting: Setting, baseline: str = "random") -> dict:
    """Every measure of one batch size (see the module docstring), and its verdict."""
    seeds = sorted(set.intersection(*[set(runs) for runs in setting.curves.values()]))
    start, end = setting.initial, setting.budget
    censored = setting.budget + setting.batch_size
    base = setting.curves[baseline]
    full = float(np.mean([setting.full[s] for s in seeds]))
    out: dict = {"batch_size": setting.batch_size, "seeds": seeds, "full_pool_accuracy": full, "targets": list(setting.targets),
                 "strategies": {}}
    tests = []
    for name, runs in setting.curves.items():
        areas = [aubc(runs[s], start, end) for s in seeds]
        entry = {"aubc": dict(zip(("estimate", "low", "high"), bootstrap_mean(areas))), "labels_to_target": {},
                 "saving_vs_random": {}, "deficiency": float(np.mean([deficiency(runs[s], base[s], setting.full[s]) for s in seeds]))}
        for fraction in setting.targets:
            reached = [labels_to(runs[s], fraction * setting.full[s]) for s in seeds]
            entry["labels_to_target"][str(fraction)] = reached
            if name != baseline:
                saved = [(labels_to(base[s], fraction * setting.full[s]) or censored) - (r or censored) for s, r in zip(seeds, reached)]
                entry["saving_vs_random"][str(fraction)] = dict(zip(("estimate", "low", "high"), bootstrap_mean(saved)))
                entry["saving_vs_random"][str(fraction)]["censored"] = any(r is None for r in reached) or any(
                    labels_to(base[s], fraction * setting.full[s]) is None for s in seeds)
        finals = [setting.final.get(name, {}).get(s) for s in seeds]
        if all(f is not None and f.get("macro_f1") is not None for f in finals):
            entry["macro_f1"] = dict(zip(("estimate", "low", "high"), bootstrap_mean([f["macro_f1"] for f in finals])))
            recalls = [f["recall"] for f in finals if f.get("recall")]
            if recalls:
                entry["recall"] = [None if any(r[c] is None for r in recalls) else float(np.mean([r[c] for r in recalls]))
                                   for c in range(len(recalls[0]))]
            entry["labels_to_every_class"] = [f["discovery"] for f in finals]
        if name != baseline:
            diff = [a - aubc(base[s], start, end) for a, s in zip(areas, seeds)]
            entry["aubc_vs_random"] = float(np.mean(diff))
            tests.append((name, paired_p(diff), float(np.mean(diff))))
        out["strategies"][name] = entry
    for (name, p, _), adjusted in zip(tests, holm_adjusted([t[1] for t in tests])):
        out["strategies"][name]["p"], out["strategies"][name]["p_holm"] = p, adjusted
    winners = [(mean, name) for (name, _, mean), adjusted in zip(tests, holm_adjusted([t[1] for t in tests])) if adjusted < 0.05 and mean > 0]
    out["saves_labels"] = bool(winners)
    out["best"] = max(winners)[1] if winners else None
    return out


def verdict(results: list[dict]) -> tuple[bool, Optional[str], list[str]]:
    """(saves_labels, best strategy, the verdict in sentences) over the batch sizes."""
    lines = []
    winners = [(r["strategies"][r["best"]]["aubc"]["estimate"], r["best"], r["batch_size"]) for r in results if r["saves_labels"]]
    for r in results:
        seeds = len(r["seeds"])
        if not r["saves_labels"]:
            lines.append(f"b = {r['batch_size']}: no evidence that active learning saves labels on this data ({seeds} seeds; no strategy's "
                         "area under the budget curve beats random's after Holm's correction).")
            continue
        best = r["strategies"][r["best"]]
        first = r.get("targets", TARGETS)[0]
        saving = best["saving_vs_random"][str(first)]
        bound = " at least" if saving["censored"] else ""
        lines.append(f"b = {r['batch_size']}: {r['best']} saves labels against random here: to {first:.0%} of the full-pool "
                     f"accuracy ({r['full_pool_accuracy']:.3f}) it needed{bound} {saving['estimate']:.0f} fewer labels on average "
                     f"(95% interval {saving['low']:.0f} to {saving['high']:.0f}, {seeds} seeds); Holm-corrected p = {best['p_holm']:.3g}.")
    best = max(winners) if winners else None
    if best:
        lines.append(f"Use {best[1]} with b = {best[2]} (the largest area under the budget curve among the strategies that beat random).")
    return bool(winners), (best[1] if best else None), lines


def write(out: Path, settings: list[Setting], title: str = "Does active learning pay on this data?") -> dict:
    """report.md, compare.json and the labels-saved plot in ``out``; returns compare.json's content."""
    out.mkdir(parents=True, exist_ok=True)
    results = [analyse(s) for s in settings]
    saves, best, sentences = verdict(results)
    summary = {"saves_labels": saves, "best": best, "verdict": sentences, "settings": results}
    (out / "compare.json").write_text(json.dumps(summary, indent=1))
    md = [f"# {title}", "", "## Verdict", ""] + [f"- {s}" for s in sentences] + [""]
    for r in results:
        md += [f"## b = {r['batch_size']} ({len(r['seeds'])} seeds; full-pool accuracy {r['full_pool_accuracy']:.3f})", "",
               "| strategy | AUBC (95% interval) | AUBC - random's | Holm p | deficiency | labels to "
               + " / ".join(f"{t:.0%}" for t in r["targets"]) + " of full "
               f"(per seed) | saved vs random to {r['targets'][0]:.0%} (95% interval) |", "|---|---|---|---|---|---|---|"]
        for name, e in r["strategies"].items():
            a = e["aubc"]
            saving = e["saving_vs_random"].get(str(r["targets"][0]))
            saved = (f"{saving['estimate']:+.0f} ({saving['low']:+.0f} to {saving['high']:+.0f})" + (" (censored)" if saving["censored"] else "")
                     if saving else "-")
            md.append(f"| {name} | {a['estimate']:.4f} ({a['low']:.4f}-{a['high']:.4f}) | "
                      f"{e['aubc_vs_random']:+.4f} | {e['p_holm']:.3g} | {e['deficiency']:.3f} | " if "p_holm" in e else
                      f"| {name} | {a['estimate']:.4f} ({a['low']:.4f}-{a['high']:.4f}) | - | - | {e['deficiency']:.3f} | ")
            md[-1] += " / ".join(",".join("-" if x is None else str(x) for x in e["labels_to_target"][str(f)]) for f in r["targets"]) + f" | {saved} |"
        md.append("")
        if all("macro_f1" in e for e in r["strategies"].values()):
            md += ["At the budget: macro-F1 (rare classes count as much as common ones), the lowest class recall and the labels until "
                   "every class had been labelled (minority discovery; per seed):", "",
                   "| strategy | macro-F1 (95% interval) | lowest class recall | labels to every class |", "|---|---|---|---|"]
            for name, e in r["strategies"].items():
                f1, recall = e["macro_f1"], [x for x in e.get("recall", []) if x is not None]
                md.append(f"| {name} | {f1['estimate']:.4f} ({f1['low']:.4f}-{f1['high']:.4f}) | "
                          f"{(f'{min(recall):.3f}' if recall else '-')} | "
                          + ",".join("-" if x is None else str(x) for x in e["labels_to_every_class"]) + " |")
            md.append("")
            md += ["![recall of each class at the budget](recall.png)", ""]
    _plot_savings(out / "labels_saved.png", settings)
    if any(all("recall" in e for e in r["strategies"].values()) for r in results):
        _plot_recall(out / "recall.png", results)
    md += ["## Labels saved against random, by budget", "", "For each label count n: how many more labels random needed to reach "
           "the accuracy the strategy had at n (mean curves over seeds; above 0: the strategy saves labels).", "",
           "![labels saved](labels_saved.png)", "",
           "Learning curves, labels-needed tables and the rest: [report/report.md](report/report.md).", ""]
    (out / "report.md").write_text("\n".join(md))
    return summary


def labels_saved_curve(curve: dict[int, float], random_curve: dict[int, float]) -> list[tuple[int, float]]:
    """(n, random's first count reaching the strategy's accuracy at n, minus n); n where random never gets there are left out."""
    out = []
    for n in sorted(curve):
        reached = labels_to(random_curve, curve[n])
        if reached is not None:
            out.append((n, float(reached - n)))
    return out


def _mean_curve(runs: dict[int, dict[int, float]]) -> dict[int, float]:
    counts = sorted(set.intersection(*[set(c) for c in runs.values()]))
    return {c: float(np.mean([run[c] for run in runs.values()])) for c in counts}


def _plot_savings(path: Path, settings: list[Setting]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(settings), figsize=(6.5 * len(settings), 4.5), squeeze=False)
    for ax, s in zip(axes[0], settings):
        base = _mean_curve(s.curves["random"])
        for name, runs in s.curves.items():
            if name == "random":
                continue
            points = labels_saved_curve(_mean_curve(runs), base)
            if points:
                ax.plot(*zip(*points), marker=".", label=name)
        ax.axhline(0, color="grey", lw=1, ls="--")
        ax.set(title=f"labels saved against random, b = {s.batch_size}", xlabel="labels (budget)", ylabel="labels saved")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_recall(path: Path, results: list[dict]) -> None:
    """Each class's recall at the budget (mean over seeds), a line per strategy: what rare classes get."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if all("recall" in e for e in r["strategies"].values())]
    fig, axes = plt.subplots(1, len(shown), figsize=(6.5 * len(shown), 4.5), squeeze=False)
    for ax, r in zip(axes[0], shown):
        for name, e in r["strategies"].items():
            points = [(c, v) for c, v in enumerate(e["recall"]) if v is not None]
            ax.plot(*zip(*points), marker=".", label=name)
        ax.set(title=f"recall of each class at the budget, b = {r['batch_size']}", xlabel="class", ylabel="recall (mean over seeds)",
               ylim=(0, 1.02))
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def full_pool_accuracy(config, data, seed: int) -> float:
    """The accuracy of a model trained on every labelled training item (the validation split kept
    for early stopping), with the runner's model and protocol: what the targets are fractions of."""
    import torch

    from batchal.experiment import Splits, evaluate_round, train_round

    config = dataclasses.replace(config, seed=seed).resolved(data)
    splits = Splits.make(data, config)
    held = set(splits.validation.tolist())
    everything = [i for i in range(len(data.train_y)) if i not in held]
    val_x, val_y = data.train_x[splits.validation], data.train_y[splits.validation]
    models, _ = train_round(config, data, everything, val_x, val_y, 0, torch.device(config.device), None)
    return float(evaluate_round(models, data, config, 0, torch.device(config.device))["accuracy"])


def pool_data(config):
    """The data set every run of a comparison sees: loaded, then long-tailed when ``config.imbalance`` says so."""
    from batchal.data.dataset import long_tailed
    from batchal.experiment import config_dataset

    raw = config_dataset(config)
    return raw, (long_tailed(raw, config.imbalance) if config.imbalance is not None else raw)


def full_pool_one(config: dict, seed: int, threads: float = 1) -> float:
    """``full_pool_accuracy`` of one seed in a process of its own (a worker process), with its thread count."""
    from batchal.distributed.cluster import use_threads
    from batchal.experiment import ExperimentConfig

    use_threads(threads)
    config = ExperimentConfig(**config)
    return full_pool_accuracy(config, pool_data(config)[1], seed)


#: The suffix of a strategy's balanced variant in a comparison (``batchal compare --balance``).
BALANCED = "-balanced"


def run_comparison(data_source: str, strategies: list[str], seeds: list[int], batch_sizes: list[int], out: Path,
                   settings: dict, progress: Optional[Callable[[str], None]] = None, workers: int = 1,
                   ray_address: Optional[str] = None, targets: tuple[float, ...] = TARGETS) -> dict:
    """Run (or resume) every (strategy, b, seed) as a ``batchal run`` run under OUT/runs, the full-pool
    model per seed, then write the comparison. ``settings``: ExperimentConfig fields (budget, ...);
    ``targets``: fractions of the full-pool accuracy, the first the verdict's."""
    if not targets or any(isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1 for t in targets):
        raise ValueError(f"targets must be fractions in (0, 1] of the full-pool accuracy, e.g. 0.95,0.99; got {targets!r}")
    from batchal.experiment import ExperimentConfig

    say = progress or (lambda _: None)
    if "random" not in strategies:
        strategies = [*strategies, "random"]  # always the baseline
    # "NAME-balanced": the strategy wrapped by the class-balancing rule (batchal.acquire.balance_batch).
    configs = {(s, b, seed): ExperimentConfig(dataset=data_source, strategy=s.removesuffix(BALANCED), seed=seed, acquisition_size=b,
                                              balance=s.endswith(BALANCED), **settings)
               for b in batch_sizes for s in strategies for seed in seeds}
    first = next(iter(configs.values()))
    raw, data = pool_data(first)  # data: the pool every run sees
    folders = {key: out / "runs" / f"{key[0]}-b{key[1]}-seed{key[2]}" for key in configs}
    full_file = out / "full_pool.json"
    full = {int(k): v for k, v in json.loads(full_file.read_text()).items()} if full_file.exists() else {}
    missing = [seed for seed in seeds if seed not in full]

    def full_done(seed: int, accuracy: float) -> None:
        full[seed] = accuracy
        full_file.write_text(json.dumps(full))  # kept as each finishes: a rerun trains only the missing ones

    out.mkdir(parents=True, exist_ok=True)
    rows = _run_all(configs, folders, raw, workers, ray_address, say, first, missing, full_done)
    for seed in missing:
        if seed not in full:
            say(f"full-pool model, seed {seed}")
            full_done(seed, full_pool_accuracy(first, data, seed))
    from batchal.experiment import Splits

    resolved = first.resolved(data)
    initial = {seed: data.train_y[Splits.make(data, dataclasses.replace(resolved, seed=seed)).initial].tolist() for seed in seeds}
    setting_list = [Setting(b, resolved.initial_size, resolved.budget,
                            {s: {seed: curve_of(rows[(s, b, seed)]) for seed in seeds} for s in strategies}, full,
                            {s: {seed: final_of(rows[(s, b, seed)], initial[seed], data.num_classes) for seed in seeds} for s in strategies},
                            tuple(float(t) for t in targets))
                    for b in batch_sizes]
    from batchal.report import write_report

    write_report([folders[k] for k in folders], out / "report", [0.9, 0.95], title="batchal compare: the runs")
    return write(out, setting_list)


def _run_all(configs, folders, data, workers, ray_address, say, first, full_missing, full_done) -> dict:
    """Every run's rows: on Ray, in worker processes, or here one after another. With worker
    processes, the missing full-pool models (``full_missing`` seeds) train among the runs
    (``full_done(seed, accuracy)`` as each ends); otherwise the caller trains them after."""
    from batchal.distributed.studies import run_one
    from batchal.experiment import run_experiment

    if ray_address is not None:
        from batchal.distributed.studies import run_study

        outcomes = run_study({f"{k[0]} b={k[1]} seed {k[2]}": (c, folders[k]) for k, c in configs.items()}, ray_address,
                             on_done=lambda o: say(f"{o.name}: {'done' if o.error is None else 'FAILED: ' + o.error}"))
        failed = [o.name for o in outcomes.values() if o.error is not None]
        if failed:
            raise ValueError(f"{len(failed)} run(s) failed: {', '.join(failed)}; run the same command again to retry them")
        return {k: outcomes[f"{k[0]} b={k[1]} seed {k[2]}"].rows for k in configs}
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            full = {seed: pool.submit(full_pool_one, first.to_dict(), seed, 1) for seed in full_missing}
            futures = {k: pool.submit(run_one, c.to_dict(), str(folders[k]), 1) for k, c in configs.items()}
            for seed, future in full.items():
                full_done(seed, future.result())
                say(f"full-pool model, seed {seed}: test accuracy {future.result():.4f}")
            rows = {}
            for k, future in futures.items():
                rows[k] = future.result()
                say(f"{k[0]} b={k[1]} seed {k[2]}: done, {rows[k][-1]['labelled']} labels")
            return rows
    rows = {}
    for k, c in configs.items():
        rows[k] = run_experiment(c, folders[k], data=data)
        say(f"{k[0]} b={k[1]} seed {k[2]}: done, {rows[k][-1]['labelled']} labels, test accuracy {rows[k][-1]['test_accuracy']:.4f}")
    return rows

