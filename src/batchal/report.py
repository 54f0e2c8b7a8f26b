"""Reports over finished runs: plots (PNG) and a Markdown summary.

``write_report(run_dirs, out_dir, thresholds)`` reads every run folder (``config.json`` +
``results.jsonl``), groups runs into settings (data set, acquisition size) and strategies, and
writes:

- ``learning_curves.png``: test accuracy against labels, median and quartile band over seeds;
- the labels-needed table (BatchBALD's counting: labelled-set size at the first round reaching
  the threshold, minus b; quartiles over seeds with "nearest" interpolation);
- ``batch_size_sweep.png``: each strategy's median curve at every acquisition size b, when
  runs of one data set and strategy use several b;
- ``acquired_labels.png``: entropy of each round's acquired labels and the histogram of
  acquired classes;
- ``time_per_round.png``: mean seconds per round split into train, score, select;
- ``penalty_matrix.png`` and ``normalised_error_cdf.png`` (BADGE's evaluation) when a setting
  has several strategies and seeds, and ``batch_diagnostics.png`` (log-determinant of the
  chosen batch's gradient-embedding Gram matrix, mean embedding norm) when recorded;
- ``report.md`` with the tables and the plots.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from batchal.experiment import COUNTING_NOTE, labels_to_reach
from batchal.run_files import read_config, read_results, row_checker


# Config keys that may differ between the seeds of one curve; any other difference between runs
# of the same setting and strategy is a different protocol, and the report keeps them apart.
_NOT_PROTOCOL = {"seed", "data_dir", "device", "eval_batch_size"}


@dataclass
class Run:
    path: Path
    config: dict
    rows: list[dict]
    variant: str = ""  # set by find_runs when runs of one setting and strategy differ in protocol

    @property
    def setting(self) -> str:
        return f"{self.config['dataset']} b={self.config['acquisition_size']}"

    @property
    def strategy(self) -> str:
        """The strategy's name, with the protocol variant when one is needed to tell runs apart."""
        return f"{self.config['strategy']} ({self.variant})" if self.variant else self.config["strategy"]

    @property
    def seed(self) -> int:
        return self.config["seed"]

    @property
    def kind(self) -> str:
        """classification, or regression (a regression run's config.json says task: regression)."""
        return "regression" if self.config.get("task") == "regression" else "classification"


def find_runs(paths: list) -> list[Run]:
    """Every run folder under the given paths (a path may be a run folder or hold many)."""
    runs, seen = [], set()
    for p in map(Path, paths):
        if not p.exists():
            raise ValueError(f"{p}: no such folder")
        configs = [p / "config.json"] if (p / "config.json").is_file() else sorted(p.rglob("config.json"))
        for config_path in configs:
            folder = config_path.parent.resolve()
            if folder in seen:
                continue
            seen.add(folder)
            config = read_config(config_path)
            rows = read_results(folder / "results.jsonl", row_checker(config))
            if rows:
                runs.append(Run(folder, config, rows))
    if not runs:
        raise ValueError(f"no finished rounds found under {', '.join(map(str, paths))} (expected folders with config.json and results.jsonl)")
    _label_variants(runs)
    return runs


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif prefix or key not in _NOT_PROTOCOL:
            out[prefix + key] = value
    return out


def _describe(key: str, value) -> str:
    if key == "pool_subsample":
        return "full pool" if value is None else f"pool {value:,}"
    return f"{key}={value}"


def _label_variants(runs: list[Run]) -> None:
    """Runs of one setting and strategy that differ in protocol (pool subsample, K, ...) are not
    seeds of one curve: name each by the config values that tell them apart. A strategy named so
    in one setting is named by the same keys in every setting, so that what compares strategies
    across settings (penalty matrix, error CDF) sees one strategy under one name."""
    by_curve: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        by_curve[(run.setting, run.config["strategy"])].append(run)
    flat = {id(run): _flatten(run.config) for run in runs}
    keys_of: dict[str, set] = defaultdict(set)
    for (_, strategy), members in by_curve.items():
        keys = {k for run in members for k in flat[id(run)]}
        keys_of[strategy] |= {k for k in keys if len({json.dumps(flat[id(run)].get(k), sort_keys=True) for run in members}) > 1}
    for run in runs:
        run.variant = ", ".join(_describe(k, flat[id(run)].get(k)) for k in sorted(keys_of[run.config["strategy"]]))


def group(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    out: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        out[run.setting][run.strategy].append(run)
    return {s: dict(v) for s, v in sorted(out.items(), key=lambda kv: setting_order(kv[0]))}


def setting_order(setting: str) -> tuple:
    """Sort key for "dataset b=N" names: by data set, then by b as a number (5 before 10 before 40)."""
    dataset, _, b = setting.rpartition(" b=")
    return (dataset, int(b)) if b.isdigit() else (setting, 0)


def curve(runs: list[Run], metric: str = "test_accuracy") -> tuple[np.ndarray, np.ndarray]:
    """Label counts common to every seed, and the metric (accuracy by default) [seeds, counts]."""
    counts = sorted(set.intersection(*[{r["labelled"] for r in run.rows} for run in runs]))
    values = np.array([[next(r[metric] for r in run.rows if r["labelled"] == c) for c in counts] for run in runs])
    return np.array(counts), values


def labels_needed_quartiles(runs: list[Run], threshold: float) -> tuple[Optional[float], ...]:
    b = runs[0].config["acquisition_size"]
    values = [labels_to_reach(run.rows, threshold, b) for run in runs]
    arr = np.array([math.inf if v is None else v for v in values], dtype=float)
    return tuple(float(np.percentile(arr, q, method="nearest")) for q in (25, 50, 75))


def label_entropy(labels: list[int]) -> float:
    if not labels:
        return math.nan
    counts = np.bincount(labels).astype(float)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def significant_wins(strategies: dict[str, list[Run]], critical: Optional[float] = None) -> Optional[tuple[list[int], dict[tuple[str, str], list[int]]]]:
    """One setting's paired comparisons: the label counts every strategy's seeds share, and for
    each ordered pair (a, b) the counts where a beats b by a two-sided paired t-test over the
    seeds all strategies share (t above the 95% critical value, e.g. 2.776 for 5 seeds; an exact
    tie of differences counts as a win when a is ahead). None when nothing can be compared."""
    from scipy import stats

    present = sorted(strategies)
    if len(present) < 2:
        return None
    seeds = set.intersection(*[{r.seed for r in strategies[s]} for s in present])
    if len(seeds) < 2:
        return None
    curves = {}
    for s in present:
        runs = sorted((r for r in strategies[s] if r.seed in seeds), key=lambda r: r.seed)
        curves[s] = curve(runs)
    counts = sorted(set.intersection(*[set(c.tolist()) for c, _ in curves.values()]))
    if not counts:
        return None
    t_crit = critical if critical is not None else float(stats.t.ppf(0.975, len(seeds) - 1))
    wins: dict[tuple[str, str], list[int]] = {}
    for a in present:
        for b in present:
            if a == b:
                continue
            wins[(a, b)] = []
            for c in counts:
                acc_a = curves[a][1][:, list(curves[a][0]).index(c)]
                acc_b = curves[b][1][:, list(curves[b][0]).index(c)]
                diff = acc_a - acc_b
                sd = diff.std(ddof=1)
                if sd == 0:
                    t = math.inf if diff.mean() > 0 else 0.0
                else:
                    t = diff.mean() / (sd / math.sqrt(len(diff)))
                if t > t_crit:
                    wins[(a, b)].append(c)
    return counts, wins


def penalty_matrix(grouped: dict[str, dict[str, list[Run]]], critical: Optional[float] = None) -> tuple[list[str], np.ndarray, int]:
    """BADGE's pairwise penalty matrix: P[i, j] += 1 / (number of checkpoints) for every setting
    and checkpoint where strategy i beats j (``significant_wins``). Returns (strategies, P,
    settings used)."""
    names = sorted({s for strategies in grouped.values() for s in strategies})
    P = np.zeros((len(names), len(names)))
    used = 0
    for strategies in grouped.values():
        compared = significant_wins(strategies, critical)
        if compared is None:
            continue
        counts, wins = compared
        used += 1
        for (a, b), won in wins.items():
            for _ in won:
                P[names.index(a), names.index(b)] += 1 / len(counts)
    return names, P, used


def normalised_errors(grouped: dict[str, dict[str, list[Run]]], baseline: str = "random") -> dict[str, list[float]]:
    """Error / the baseline's error at the same setting and label count (mean over seeds)."""
    out: dict[str, list[float]] = defaultdict(list)
    for strategies in grouped.values():
        if baseline not in strategies:
            continue
        base_counts, base_acc = curve(strategies[baseline])
        base_err = dict(zip(base_counts.tolist(), 1 - base_acc.mean(0)))
        for s, runs in strategies.items():
            counts, acc = curve(runs)
            for c, e in zip(counts.tolist(), 1 - acc.mean(0)):
                if c in base_err and base_err[c] > 0:
                    out[s].append(float(e / base_err[c]))
    return dict(out)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, axes, path: Path, plt) -> None:
    """Grid and legend on every axis, tight layout, PNG at 120 dpi, figure closed."""
    for ax in np.atleast_1d(axes).flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _whole_number_ticks(*axes, most: int = 12) -> None:
    """Label counts and classes are whole numbers: no 12.5 on their axis. Where the curves have at
    most ``most`` distinct label counts, the ticks are those counts (the rounds), not 24, 32, 40
    between rounds at 20, 30, 40."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        data_lines = [line for line in ax.lines if line.get_transform() == ax.transData]  # not axhline's axes-fraction x
        xs = sorted({float(x) for line in data_lines for x in line.get_xdata()})
        if 2 <= len(xs) <= most and all(x.is_integer() for x in xs):
            ax.set_xticks(xs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _settings_title(settings: list[str], most: int = 3) -> str:
    """The settings a figure pools, for its title: all of them when few, else how many."""
    return ", ".join(settings) if len(settings) <= most else f"{len(settings)} settings ({', '.join(settings[:most])}, ...)"


def _seeds(n: int) -> str:
    return f"{n} seed" + ("s" if n != 1 else "")


def format_reach(final_labels: list[int], complete: bool) -> str:
    """How far a group of runs got: "300", or "225-300 (in progress)" while some still run."""
    text = f"{final_labels[0]}-{final_labels[-1]}" if len(final_labels) > 1 else str(final_labels[0])
    return text if complete else f"{text} (in progress)"


def _fmt(v: Optional[float]) -> str:
    return "not reached" if v is None or math.isinf(v) else f"{v:.0f}"


@dataclass
class _Page:
    """What every section of a report draws on: one label kind's runs, grouped."""

    out: Path
    plt: object
    runs: list[Run]
    grouped: dict[str, dict[str, list[Run]]]
    settings: list[str]
    colors: dict[str, tuple]


def _page(out: Path, plt, runs: list[Run]) -> _Page:
    grouped = group(runs)
    palette = plt.get_cmap("tab10").colors
    colors: dict[str, tuple] = {}
    for s in sorted({r.strategy for r in runs}):
        colors[s] = palette[len(colors) % len(palette)]
    return _Page(out, plt, runs, grouped, list(grouped), colors)


def write_report(paths: list, out_dir, thresholds: list[float] = (0.9, 0.95), title: str = "batchal report") -> Path:
    """The report over every run under ``paths``: classification runs and regression runs each get their sections."""
    plt = _plt()
    runs = find_runs(list(paths))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classification = [run for run in runs if run.kind == "classification"]
    regression = [run for run in runs if run.kind == "regression"]
    settings = len({run.setting for run in runs})
    md = [f"# {title}", "", f"{len(runs)} runs in {settings} setting(s)."
          + (f" {len(regression)} of them regression runs (their section: Regression)." if regression and classification else ""), ""]
    if classification:
        page = _page(out, plt, classification)
        md += _learning_curves(page) + _batch_size_sweep(page) + _labels_needed(page, thresholds) + _acquired_labels(page)
        md += _time_per_round(page) + _penalty_matrix(page) + _error_cdf(page) + _batch_diagnostics(page)
    if regression:
        md += _regression(_page(out, plt, regression))
    md += ["## Runs", ""] + [f"- `{os.path.relpath(run.path, out.resolve())}`: {run.strategy}, seed {run.seed}, {len(run.rows)} rounds" for run in runs]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out / "report.md"


def _regression(page: _Page) -> list[str]:
    """Regression runs: test RMSE against labels (mean and standard error over seeds) and the final RMSE."""
    out, plt, grouped, settings, colors = page.out, page.plt, page.grouped, page.settings, page.colors
    fig, axes = plt.subplots(1, len(settings), figsize=(6.5 * len(settings), 4.5), squeeze=False)
    md = ["## Regression", "", "Test RMSE (standardised target; lower is better) against labels: mean over seeds, band one "
          "standard error either side.", "", "![regression RMSE](regression_rmse.png)", "",
          "| setting | strategy | seeds | final labels | final test RMSE (mean) |", "|---|---|---|---|---|"]
    for ax, setting in zip(axes[0], settings):
        for strategy, srs in sorted(grouped[setting].items()):
            counts, rmse = curve(srs, "test_rmse")
            mean = rmse.mean(0)
            se = rmse.std(0, ddof=1) / math.sqrt(len(srs)) if len(srs) > 1 else np.zeros_like(mean)
            ax.plot(counts, mean, label=f"{strategy} ({_seeds(len(srs))})", color=colors[strategy])
            ax.fill_between(counts, mean - se, mean + se, alpha=0.2, color=colors[strategy])
            reached = sorted({r.rows[-1]["labelled"] for r in srs})
            complete = all("stop_reason" in r.rows[-1] for r in srs)
            md.append(f"| {setting} | {strategy} | {len(srs)} | {format_reach(reached, complete)} | "
                      f"{np.mean([r.rows[-1]['test_rmse'] for r in srs]):.4f} |")
        ax.set(title=setting, xlabel="labelled examples", ylabel="test RMSE")
        _whole_number_ticks(ax)
    _save(fig, axes, out / "regression_rmse.png", plt)
    return md + [""]


def _learning_curves(page: _Page) -> list[str]:
    """Test accuracy against labels per setting: median and quartile band over seeds."""
    out, plt, grouped, settings, colors = page.out, page.plt, page.grouped, page.settings, page.colors
    md: list[str] = []
    # Learning curves.
    fig, axes = plt.subplots(1, len(settings), figsize=(6.5 * len(settings), 4.5), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        for strategy, srs in sorted(grouped[setting].items()):
            counts, acc = curve(srs)
            q25, q50, q75 = np.percentile(acc, [25, 50, 75], axis=0)
            ax.plot(counts, q50, label=f"{strategy} ({_seeds(len(srs))})", color=colors[strategy])
            ax.fill_between(counts, q25, q75, alpha=0.2, color=colors[strategy])
        ax.set(title=setting, xlabel="labelled examples", ylabel="test accuracy")
        _whole_number_ticks(ax)
    _save(fig, axes, out / "learning_curves.png", plt)
    md += ["## Learning curves", "", "Median over seeds, band from the 25th to the 75th percentile.", "", "![learning curves](learning_curves.png)", ""]
    return md


def _batch_size_sweep(page: _Page) -> list[str]:
    """Each strategy's median curve at every acquisition size b, where runs use several."""
    out, plt, runs = page.out, page.plt, page.runs
    md: list[str] = []
    # Acquisition-size sweep: one panel per data set and strategy run with several b.
    sweeps: dict[tuple, dict[tuple, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        sweeps[(run.config["dataset"], run.config["strategy"])][(run.config["acquisition_size"], run.variant)].append(run)
    sweeps = {k: v for k, v in sorted(sweeps.items()) if len({b for b, _ in v}) > 1}
    if sweeps:
        # Median curve of every (b, variant) line, computed once for the plot and the table.
        medians: dict[tuple, dict[tuple, dict[int, float]]] = defaultdict(dict)
        for key, lines in sweeps.items():
            for line, srs in sorted(lines.items()):
                counts, acc = curve(srs)
                medians[key][line] = dict(zip(counts, np.median(acc, axis=0)))
        fig, axes = plt.subplots(1, len(sweeps), figsize=(6.5 * len(sweeps), 4.5), squeeze=False, sharey=True)
        for ax, ((dataset, strategy), lines) in zip(axes[0], sweeps.items()):
            sizes = sorted({b for b, _ in lines})
            shades = dict(zip(sizes, plt.get_cmap("viridis")(np.linspace(0, 0.85, len(sizes)))))
            styles = defaultdict(lambda: iter(["-", "--", ":", "-."] * 4))  # variants of one b: one colour, other dashes
            for (b, variant), m in medians[(dataset, strategy)].items():
                label = f"b={b}" + (f", {variant}" if variant else "") + f" ({_seeds(len(lines[(b, variant)]))})"
                ax.plot(list(m), list(m.values()), label=label, color=shades[b], ls=next(styles[b]))
            ax.set(title=f"{dataset}: {strategy} by acquisition size b", xlabel="labelled examples", ylabel="test accuracy (median over seeds)")
            _whole_number_ticks(ax)
        _save(fig, axes, out / "batch_size_sweep.png", plt)
        md += ["## Acquisition-size sweep", "",
               "The same strategy at each acquisition size b: a strategy that picks redundant batches falls further behind as b grows. "
               "Median test accuracy at the label counts every b passes through:",
               "", "![acquisition-size sweep](batch_size_sweep.png)", ""]
        for (dataset, strategy), by_line in medians.items():
            # Columns: the label counts on every b's grid (first count + multiples of b) that some
            # run reached; a run still in progress shows "-" past its last round.
            union = set().union(*by_line.values())
            shared = sorted(c for c in union if all(c >= min(m) and (c - min(m)) % b == 0 for (b, _), m in by_line.items()))
            md += [f"| {dataset}: {strategy} | " + " | ".join(str(c) for c in shared) + " |", "|" + "---|" * (len(shared) + 1)]
            md += [f"| b={b}" + (f", {variant}" if variant else "") + " | " + " | ".join(f"{m[c]:.3f}" if c in m else "-" for c in shared) + " |"
                   for (b, variant), m in by_line.items()]
            md.append("")
    return md


def _labels_needed(page: _Page, thresholds: list[float]) -> list[str]:
    """The labels-needed table (BatchBALD's counting) and labels_needed.json."""
    out, grouped, settings = page.out, page.grouped, page.settings
    md: list[str] = []
    # Labels needed.
    md += ["## Labels needed to reach an accuracy", "",
           "25% / median / 75% over seeds, nearest-rank.", ""]
    head = ["setting", "strategy", "seeds"] + [f"{t:.0%} acc" for t in thresholds] + ["final labels", "final accuracy (median)"]
    md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table_rows = []
    for setting in settings:
        for strategy, srs in sorted(grouped[setting].items()):
            cells = [setting, strategy, str(len(srs))]
            entry = {"setting": setting, "strategy": strategy, "seeds": len(srs)}
            for t in thresholds:
                q = labels_needed_quartiles(srs, t)
                cells.append(" / ".join(_fmt(v) for v in q))
                entry[f"labels_to_{t}"] = [None if math.isinf(v) else v for v in q]
            finals = [r.rows[-1]["test_accuracy"] for r in srs]
            reached = sorted({r.rows[-1]["labelled"] for r in srs})
            complete = all("stop_reason" in r.rows[-1] for r in srs)
            budgets = [r.config["budget"] for r in srs if r.config.get("budget") is not None]
            entry.update({"budget": max(budgets) if budgets else None, "final_labels": reached, "complete": complete})
            cells += [format_reach(reached, complete), f"{np.median(finals):.4f}"]
            md.append("| " + " | ".join(cells) + " |")
            table_rows.append(entry)
    md += ["", COUNTING_NOTE, ""]
    (out / "labels_needed.json").write_text(json.dumps(table_rows, indent=1))
    return md


def _acquired_labels(page: _Page) -> list[str]:
    """Entropy of each acquired batch's labels and the class histogram."""
    out, plt, grouped, settings, colors = page.out, page.plt, page.grouped, page.settings, page.colors
    md: list[str] = []
    # Acquired labels: entropy per round and class histogram.
    fig, axes = plt.subplots(2, len(settings), figsize=(6.5 * len(settings), 8), squeeze=False)
    for col, setting in enumerate(settings):
        ax_e, ax_h = axes[0][col], axes[1][col]
        strategies = sorted(grouped[setting])
        num_classes = 1 + max((max(r["acquired_labels"]) for srs in grouped[setting].values() for run in srs for r in run.rows if r["acquired_labels"]), default=0)
        width = 0.8 / max(1, len(strategies))
        for k, strategy in enumerate(strategies):
            srs = grouped[setting][strategy]
            rounds = min(len(run.rows) for run in srs)
            ent = np.array([[label_entropy(run.rows[i]["acquired_labels"]) for i in range(rounds)] for run in srs])
            labelled = [srs[0].rows[i]["labelled"] for i in range(rounds)]
            valid = ~np.isnan(ent).all(0)
            if valid.any():
                ax_e.plot(np.array(labelled)[valid], np.nanmedian(ent[:, valid], axis=0), marker=".", label=strategy, color=colors[strategy])
            hist = np.zeros(num_classes)
            for run in srs:
                for r in run.rows:
                    for c in r["acquired_labels"]:
                        hist[c] += 1
            # Bars of one class grouped around its tick.
            ax_h.bar(np.arange(num_classes) + (k - (len(strategies) - 1) / 2) * width, hist / max(1, hist.sum()), width=width,
                     label=strategy, color=colors[strategy])
        b = grouped[setting][strategies[0]][0].config["acquisition_size"]
        ax_e.axhline(math.log(min(b, num_classes)), ls="--", color="grey", lw=1, label="uniform over classes")
        ax_e.set(title=f"{setting}: diversity of each acquired batch", xlabel="labelled examples (before the acquisition)", ylabel="entropy of acquired labels (nats)")
        ax_h.set(title=f"{setting}: acquired classes (all rounds, all seeds)", xlabel="class", ylabel="fraction of acquisitions",
                 xlim=(-0.5, num_classes - 0.5))
        _whole_number_ticks(ax_e, ax_h)
    _save(fig, axes, out / "acquired_labels.png", plt)
    md += ["## What was acquired", "", "Entropy of each acquired batch's true labels (higher = more diverse) and the class histogram.", "",
           "![acquired labels](acquired_labels.png)", ""]
    return md


def _time_per_round(page: _Page) -> list[str]:
    """Mean seconds per acquisition round, split into train, score and select."""
    out, plt, grouped, settings = page.out, page.plt, page.grouped, page.settings
    md: list[str] = []
    # Time per round, per setting: data sets differ by orders of magnitude in cost.
    parts = ("train", "score", "select")
    fig, axes = plt.subplots(1, len(settings), figsize=(max(5, 1.2 * max(len(grouped[s]) for s in settings)) * len(settings), 4), squeeze=False)
    md += ["## Time per round", "", "Mean seconds per acquisition round.", "", "| setting | strategy | train s | score s | select s |", "|---|---|---|---|---|"]
    for ax, setting in zip(axes[0], settings):
        names = sorted(grouped[setting])
        # a row without timings (seconds is optional in a results file) counts for no phase
        means = {p: [np.mean([r["seconds"][p] for run in grouped[setting][s] for r in run.rows
                              if r["acquired"] and p in r.get("seconds", {})] or [0.0]) for s in names]
                 for p in parts}
        bottom = np.zeros(len(names))
        for p, color in zip(parts, ("#4c72b0", "#dd8452", "#55a868")):
            ax.bar(names, means[p], bottom=bottom, label=p, color=color)
            bottom += np.array(means[p])
        ax.set(ylabel="seconds per round (mean)", title=f"{setting}: time per acquisition round")
        ax.tick_params(axis="x", rotation=30)
        md += [f"| {setting} | {s} | {means['train'][i]:.1f} | {means['score'][i]:.1f} | {means['select'][i]:.2f} |" for i, s in enumerate(names)]
    _save(fig, axes, out / "time_per_round.png", plt)
    md += ["", "![time per round](time_per_round.png)", ""]
    return md


def _penalty_matrix(page: _Page) -> list[str]:
    """BADGE's pairwise penalty matrix across settings."""
    out, plt, grouped = page.out, page.plt, page.grouped
    md: list[str] = []
    # BADGE's evaluation across settings.
    names_p, P, used = penalty_matrix(grouped)
    if used:
        fig, ax = plt.subplots(figsize=(max(6.5, 1.5 + 0.9 * len(names_p)), max(5.5, 2 + 0.75 * len(names_p))))
        im = ax.imshow(P, cmap="viridis")
        ax.set_xticks(range(len(names_p)), names_p, rotation=45, ha="right")
        ax.set_yticks(range(len(names_p)), names_p)
        for i in range(len(names_p)):
            for j in range(len(names_p)):
                ax.text(j, i, f"{P[i, j]:.2f}", ha="center", va="center", color="w" if P[i, j] < P.max() / 2 else "k", fontsize=8)
        ax.set_xticks(range(len(names_p)), [f"{n}\n(mean {m:.2f})" for n, m in zip(names_p, P.mean(0))], rotation=45, ha="right")
        ax.set(title=f"Pairwise penalty matrix over {used} setting(s)\nP[i, j]: how often row i beats column j", xlabel="column (mean: lower is better)", ylabel="row")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.grid(False)
        fig.tight_layout()
        fig.savefig(out / "penalty_matrix.png", dpi=120)
        plt.close(fig)
        col_means = P.mean(0)
        md += ["## Pairwise penalty matrix (BADGE)", "",
               "P[i, j] adds 1/(checkpoints) for each setting and label checkpoint where strategy i beats j in a two-sided paired "
               "t-test over seeds at 95%. Column means: lower is better.", "",
               "| strategy | column mean |", "|---|---|"] + [f"| {n} | {m:.3f} |" for n, m in sorted(zip(names_p, col_means), key=lambda x: x[1])]
        md += ["", "![penalty matrix](penalty_matrix.png)", ""]
    return md


def _error_cdf(page: _Page) -> list[str]:
    """BADGE's CDF of errors normalised by random's."""
    out, plt, grouped, colors = page.out, page.plt, page.grouped, page.colors
    md: list[str] = []
    errors = normalised_errors(grouped)
    if errors:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for s, values in sorted(errors.items()):
            v = np.sort(values)
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=s, color=colors.get(s))
        ax.set(xlabel="normalised error (error / random's error)", ylabel="cumulative fraction of (setting, checkpoint)", title=f"CDF of normalised errors\n{_settings_title(list(grouped))}")
        ax.axvline(1.0, color="grey", ls="--", lw=1)
        _save(fig, ax, out / "normalised_error_cdf.png", plt)
        md += ["## Normalised error CDF (BADGE)", "", "Error divided by random's at the same setting and label count; curves further left and up are better.", "",
               "![normalised error CDF](normalised_error_cdf.png)", ""]
    return md


def _batch_diagnostics(page: _Page) -> list[str]:
    """BADGE's batch diagnostics, where the rows record them."""
    out, plt, runs, colors = page.out, page.plt, page.runs, page.colors
    md: list[str] = []
    diag = [(run, r) for run in runs for r in run.rows if r.get("batch_diagnostics")]
    if diag:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for s in sorted({r.strategy for r in runs}):
            points = [(r["labelled"], r["batch_diagnostics"]["logdet_gram"], r["batch_diagnostics"]["mean_norm"]) for run, r in diag if run.strategy == s]
            if not points:
                continue
            by_count = defaultdict(list)
            for c, ld, mn in points:
                by_count[c].append((ld, mn))
            xs = sorted(by_count)
            finite = lambda vals: [v for v in vals if v is not None and math.isfinite(v)]
            ld_med = [np.median(finite([v[0] for v in by_count[c]]) or [np.nan]) for c in xs]
            mn_med = [np.median([v[1] for v in by_count[c]]) for c in xs]
            axes[0].plot(xs, ld_med, label=s, color=colors[s])
            axes[1].plot(xs, mn_med, label=s, color=colors[s])
        where = _settings_title(sorted({run.setting for run in runs}, key=setting_order))
        axes[0].set(xlabel="labelled examples", ylabel="log det of the batch's gradient-embedding Gram matrix", title=f"batch diversity\n{where}")
        axes[1].set(xlabel="labelled examples", ylabel="mean gradient-embedding norm", title=f"batch uncertainty\n{where}")
        _whole_number_ticks(*axes)
        _save(fig, axes, out / "batch_diagnostics.png", plt)
        md += ["## Batch diagnostics (BADGE)", "", "Median over seeds.", "", "![batch diagnostics](batch_diagnostics.png)", ""]
    return md


