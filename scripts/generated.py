"""Regenerate every generated block of README.md and results/README.md from the committed rows.

A block is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; prose outside the
blocks carries no measured number it could drift from. The blocks:

- ``badge-headline``, ``badge-findings``: BADGE's protocol (``scripts/badge_report.py --blocks-only``);
- ``sweep``: the CPU-protocol acquisition-size sweep (results/mnist-sweep, results/mnist for b = 10);
- ``faithful-cpu``: the BatchBALD faithful mode on the CPU protocol (results/batchbald-faithful-cpu,
  results/mnist for study (a)'s round 0);
- ``regression``: the regression study's endpoint table and findings (results/regression/runs);
- ``badge-cpu``: the CPU-protocol BADGE study's penalty ranking, under the authors' checkpoint rule
  (results/badge-study/runs);
- ``paper-protocol``, ``badge-cost``: the BatchBALD paper-protocol figures, BADGE's compute per setting;

and, whole, ``results/badge-paper-kdpp/README.md`` (``scripts/badge_sampler.py``).

Usage: python scripts/generated.py           rewrite the blocks in place
       python scripts/generated.py --check   rewrite copies and print every difference (exit 1 if any):
                                             what tests/test_generated.py runs
"""

from __future__ import annotations

import argparse
import difflib
import math
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from badge_report import rewrite_block  # noqa: E402  (the one block writer)

from batchal.experiment import labels_to_reach  # noqa: E402
from batchal.report import find_runs, labels_needed_quartiles  # noqa: E402
from batchal.significance import holm_adjusted, paired_p  # noqa: E402

FILES = ("README.md", "results/README.md")


def _median_at(runs, count: int) -> float:
    values = [r["test_accuracy"] for run in runs for r in run.rows if r["labelled"] == count]
    return float(np.median(values)) if len(values) == len(runs) else math.nan


def _reach(runs, threshold: float) -> str:
    median = labels_needed_quartiles(runs, threshold)[1]
    return "not reached" if median is None or math.isinf(median) else f"{median:.0f}"


def sweep_block(results: Path) -> list[str]:
    runs = find_runs([results / "mnist-sweep" / "runs", results / "mnist" / "runs"])
    groups: dict[tuple, list] = defaultdict(list)
    for run in runs:
        if run.config["dataset"] != "mnist" or run.config["strategy"] not in ("bald", "batchbald"):
            continue
        full = run.config.get("pool_subsample") is None
        groups[(run.config["strategy"], run.config["acquisition_size"], full)].append(run)
    counts = [60, 100, 140, 180, 220, 300]
    name = {"bald": "BALD", "batchbald": "BatchBALD"}
    lines = ["| strategy, b | seeds | " + " | ".join(map(str, counts)) + " | labels to 90% / 95% |", "|---|---|" + "---|" * (len(counts) + 1)]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2])):
        strategy, b, full = key
        runs_ = groups[key]
        cells = [f"{_median_at(runs_, c):.3f}" if not math.isnan(_median_at(runs_, c)) else "-" for c in counts]
        lines.append(f"| {name[strategy]} b = {b}{', full pool' if full else ''} | {len(runs_)} | " + " | ".join(cells)
                     + f" | {_reach(runs_, 0.9)} / {_reach(runs_, 0.95)} |")

    def drop(strategy: str, count: int) -> float:
        return _median_at(groups[(strategy, 5, False)], count) - _median_at(groups[(strategy, 40, False)], count)

    final = {k: float(np.median([run.rows[-1]["test_accuracy"] for run in v])) for k, v in groups.items()}
    lines += ["", f"- From b = 5 to b = 40 (the 5,000-point subsample), BALD loses {drop('bald', 60):.3f} of median accuracy at 60 "
              f"labels and {drop('bald', 100):.3f} at 100; BatchBALD {drop('batchbald', 60):.3f} and {drop('batchbald', 100):.3f} "
              f"(unrounded at 100: BALD {drop('bald', 100):.4f}, BatchBALD {drop('batchbald', 100):.4f}).",
              f"- Final median accuracy: BALD b = 40 on the full pool {final[('bald', 40, True)]:.3f}, on the subsample "
              f"{final[('bald', 40, False)]:.3f}; BALD b = 5 and 10 {final[('bald', 5, False)]:.3f} and {final[('bald', 10, False)]:.3f}; "
              f"BatchBALD b = 40 on the full pool {final[('batchbald', 40, True)]:.3f}."]
    return ["Median test accuracy over seeds at the label counts every b passes through; labels to X%: the median over seeds "
            "of BatchBALD's Table 1 counting (`batchal.experiment.labels_to_reach`), nearest rank.", ""] + lines


def faithful_block(results: Path) -> list[str]:
    runs = find_runs([results / "batchbald-faithful-cpu" / "runs"])
    a_runs = [run for run in find_runs([results / "mnist" / "runs"]) if run.config["acquisition_size"] == 10]
    by = {(run.config["strategy"], run.seed): run for run in runs}
    finished = {key: "stop_reason" in run.rows[-1] for key, run in by.items()}
    round0 = {seed: by[("batchbald", seed)].rows[0]["test_accuracy"] for seed in sorted({s for _, s in by})}
    a_round0 = sorted({run.seed: run.rows[0]["test_accuracy"] for run in a_runs}.items())
    name = {"batchbald": "BatchBALD", "bald": "BALD"}

    def reach(run, threshold: float) -> str:
        value = labels_to_reach(run.rows, threshold, 10)
        return str(value) if value is not None else f"not yet at {run.rows[-1]['labelled']} labels"

    lines = ["- Runs: " + "; ".join(f"{name[s]} seed {seed} " + ("finished" if finished[(s, seed)] else f"stopped in progress at "
                                                                 f"{by[(s, seed)].rows[-1]['labelled']} labels")
                                    for s, seed in sorted(by, key=lambda k: (k[1], k[0] != "batchbald"))) + " (the command resumes them).",
             "- The fixed initial set takes the seed out of round 0: test accuracy " + ", ".join(f"{v:.4f}" for v in round0.values())
             + " for seeds " + ", ".join(map(str, round0)) + " (study (a)'s balanced random sets: " + ", ".join(f"{v:.4f}" for _, v in a_round0)
             + "; the paper's logs: 0.644-0.673).",
             "- Labels to 90% / 95% (Table 1 counting, `batchal.experiment.labels_to_reach` on the rows): "
             + "; ".join(f"{name[s]} seed {seed} {reach(by[(s, seed)], 0.9)} / {reach(by[(s, seed)], 0.95)}"
                         for s, seed in sorted(by, key=lambda k: (k[1], k[0] != "batchbald"))) + "."]
    return lines


def regression_block(results: Path) -> list[str]:
    from scipy import stats

    strategies = ["random", "regression_bald", "regression_batchbald", "regression_maxdet"]
    out = ["| data | " + " | ".join(strategies) + " |", "|---|" + "---|" * len(strategies)]
    findings = []
    for dataset, title in (("diabetes", "diabetes"), ("friedman1", "Friedman #1")):
        runs = [run for run in find_runs([results / "regression" / "runs" / dataset])]
        final = max(r["labelled"] for run in runs for r in run.rows)
        at = {s: {run.seed: next(r["test_rmse"] for r in run.rows if r["labelled"] == final) for run in runs if run.config["strategy"] == s}
              for s in strategies}
        seeds = sorted(at["random"])
        out.append(f"| {title}, RMSE at {final} labels (mean) | " + " | ".join(f"{np.mean(list(at[s].values())):.3f}" for s in strategies) + " |")
        tests = []
        for s in strategies[1:]:
            diff = np.array([at[s][k] - at["random"][k] for k in seeds])
            p = float(stats.ttest_rel([at[s][k] for k in seeds], [at["random"][k] for k in seeds]).pvalue)
            tests.append((s, float(diff.mean()), int((diff < 0).sum()), p))
        holm = holm_adjusted([t[3] for t in tests])
        out.append("| difference to random (seeds better; Holm p) | | " + " | ".join(
            f"{mean:+.3f} ({better}/{len(seeds)}; {h:.3f})" for (s, mean, better, p), h in zip(tests, holm)) + " |")
        significant = [s for (s, *_), h in zip(tests, holm) if h < 0.05]
        worse = [s for (s, mean, *_), h in zip(tests, holm) if h < 0.05 and mean > 0]
        verdict = ("a tie: no strategy differs from random after Holm's correction" if not significant else
                   f"{len(worse)} of 3 significantly worse than random" if worse else f"{len(significant)} of 3 significantly better than random")
        findings.append(f"- **{title}: {verdict}** at the stated endpoint ({final} labels, {len(seeds)} seeds; Holm-corrected p "
                        + ", ".join(f"{s} {h:.3f}" for (s, *_), h in zip(tests, holm)) + "; mean differences "
                        + ", ".join(f"{mean:+.3f}" for _, mean, _, _ in tests) + ").")
    return out + [""] + findings


def badge_cpu_block(results: Path) -> list[str]:
    """The CPU-protocol BADGE study's penalty column means by the authors' checkpoint rule (batchal.penalty)."""
    from batchal.penalty import column_means, setting_penalty

    runs = find_runs([results / "badge-study" / "runs"])
    by_setting: dict[tuple, dict[str, dict[int, dict[int, float]]]] = defaultdict(lambda: defaultdict(dict))
    initial = {}
    for run in runs:
        key = (run.config["dataset"], run.config["acquisition_size"])
        by_setting[key][run.config["strategy"]][run.seed] = {r["labelled"]: r["test_accuracy"] for r in run.rows}
        initial[key] = run.config["initial_size"]
    totals, names_all = None, None
    used = []
    for key in sorted(by_setting):
        curves = by_setting[key]
        seeds = sorted(set.intersection(*[set(v) for v in curves.values()]))
        counts = set.intersection(*[set(c) for v in curves.values() for c in v.values()])
        curves = {s: {seed: {n: v[seed][n] for n in counts} for seed in seeds} for s, v in curves.items()}
        names, P, points = setting_penalty(curves, initial[key], key[1])
        order = sorted(range(len(names)), key=lambda i: names[i])
        names, P = [names[i] for i in order], P[np.ix_(order, order)]
        totals = P if totals is None else totals + P
        names_all = names
        used.append(f"{key[0]} b = {key[1]} ({len(seeds)} seeds)")
    means = dict(zip(names_all, column_means(totals)))
    ranked = sorted(means, key=lambda n: (round(means[n], 3), n))
    return [f"- BADGE study on the CPU protocol ({len(used)} settings: {', '.join(used)}), penalty column means by the authors' "
            "checkpoint rule (`batchal.penalty`: n0 + b 2^k until random passes 99% of its final accuracy; uncorrected paired "
            "t-tests; lower is better): " + ", ".join(f"{n} {means[n]:.3f}" for n in ranked) + "."]


def paper_protocol_block(results: Path) -> list[str]:
    """The BatchBALD paper's own protocol (H100 runs): labels to 90% / 95%, per-seed order and the
    Holm-corrected paired tests over the label counts (scripts/paired_tests.py's functions)."""
    from paired_tests import holm_survivors, per_seed_order

    from batchal.report import group

    def setting(study: str) -> dict:
        runs = find_runs([results / study / "runs"])
        return {s: [r for r in runs if r.config["strategy"] == s] for s in ("batchbald", "bald", "random")}

    mnist, repeated = setting("mnist-paper"), setting("repeated-mnist-paper")
    seeds = len(mnist["batchbald"])
    won, tests = holm_survivors(mnist, "batchbald", "bald")
    lost, _ = holm_survivors(mnist, "bald", "batchbald")
    won_r, tests_r = holm_survivors(repeated, "batchbald", "bald")
    median = lambda runs, t: _reach(runs, t)  # noqa: E731
    return [
        f"- MNIST, b = 10, {seeds} seeds: labels to 90% (median; Table 1 counting) BatchBALD {median(mnist['batchbald'], 0.9)}, "
        f"BALD {median(mnist['bald'], 0.9)}, random {median(mnist['random'], 0.9)} (the paper's Table 1: BatchBALD 90, BALD 120); "
        f"to 95% BatchBALD {median(mnist['batchbald'], 0.95)}, BALD {median(mnist['bald'], 0.95)}, random {median(mnist['random'], 0.95)} "
        f"(paper: 200, 250). Per seed, {per_seed_order(mnist, 'batchbald', 'bald', 0.9)}; "
        f"{per_seed_order(mnist, 'batchbald', 'bald', 0.95)}.",
        f"- MNIST paired t-tests at each of the {tests} label counts, Holm-corrected over them: BatchBALD ahead of BALD at "
        f"{', '.join(map(str, won)) or 'no count'}; BALD ahead of BatchBALD at {', '.join(map(str, lost)) or 'no count'}.",
        f"- Repeated MNIST, b = 10, {len(repeated['batchbald'])} seeds: labels to 90% BatchBALD {median(repeated['batchbald'], 0.9)}, "
        f"BALD {median(repeated['bald'], 0.9)}, random {median(repeated['random'], 0.9)}; BatchBALD ahead of BALD at {len(won_r)} of "
        f"{tests_r} label counts after Holm's correction.",
    ]


def badge_cost_block(results: Path) -> list[str]:
    """Hours of one busy core per setting of badge-paper, summed from the rows' seconds (every phase)."""
    runs = find_runs([results / "badge-paper" / "runs"])
    hours: dict[tuple, float] = defaultdict(float)
    count: dict[tuple, int] = defaultdict(int)
    for run in runs:
        key = (run.config["dataset"], run.config["acquisition_size"])
        hours[key] += sum(sum(r["seconds"].values()) for r in run.rows) / 3600
        count[key] += 1
    order = {"letter": 0, "mnist": 1, "cifar10": 2}
    keys = sorted(hours, key=lambda k: (order.get(k[0], 9), k[1]))
    return ["| setting | runs | hours of one core |", "|---|---|---|"] + [
        f"| {d} b = {b:,} | {count[(d, b)]} | {hours[(d, b)]:.1f} |" for d, b in keys] + [
        f"| all | {sum(count.values())} | {sum(hours.values()):.1f} |"]


def _quartiles(runs, threshold: float) -> str:
    q = labels_needed_quartiles(runs, threshold)
    if all(v is None or math.isinf(v) for v in q):
        return "not reached"
    return " / ".join("not reached" if v is None or math.isinf(v) else f"{v:.0f}" for v in q)


def _final(runs) -> float:
    return float(np.median([run.rows[-1]["test_accuracy"] for run in runs]))


def _own_penalty(runs, strategy_of) -> dict[str, float]:
    """Column means of one setting's own penalty matrix (batchal.report.penalty_matrix: every round a checkpoint)."""
    from batchal.report import penalty_matrix

    curves: dict[str, list] = defaultdict(list)
    for run in runs:
        curves[strategy_of(run)].append(run)
    setting = runs[0].setting
    names, P, _ = penalty_matrix({setting: dict(curves)})
    return {n: float(P[:, i].mean()) for i, n in enumerate(names)}


def study_table(paths: list[Path], rows: list[tuple[str, str]], thresholds: tuple[float, ...], counts: list[int],
                paper: dict[str, tuple[str, ...]] = None, setting: str = None, penalty: bool = False,
                strategy_of=lambda run: run.strategy) -> list[str]:
    """A table of a study's runs: labels needed (25% / median / 75%, Table 1 counting) per threshold, the paper's
    figures beside them where given, the median accuracy at ``counts``, and (``penalty``) the setting's own penalty
    column mean. ``rows``: (shown name, strategy as the runs name it)."""
    runs = [run for run in find_runs(paths) if setting is None or run.setting == setting]
    by: dict[str, list] = defaultdict(list)
    for run in runs:
        by[strategy_of(run)].append(run)
    own = _own_penalty([run for _, strategy in rows for run in by[strategy]], strategy_of) if penalty else {}
    head = ["strategy", "seeds"]
    for t in thresholds:
        head += [f"to {t:.0%}"] + (["paper"] if paper else [])
    head += [f"median accuracy at {' / '.join(map(str, counts))} labels"] + (["penalty column mean (this setting)"] if penalty else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for shown, strategy in rows:
        group = by[strategy]
        if not group:
            continue
        cells = [shown, str(len(group))]
        for i, t in enumerate(thresholds):
            cells.append(_quartiles(group, t))
            if paper:
                cells.append(paper.get(shown, ("-",) * len(thresholds))[i])
        accs = [_median_at(group, c) for c in counts]
        cells.append(" / ".join("-" if math.isnan(a) else f"{a:.3f}" for a in accs))
        if penalty:
            cells.append(f"{own.get(strategy, math.nan):.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


PAPER_MNIST = {"BatchBALD": ("70 / 90 / 110", "190 / 200 / 230"), "BALD": ("120 / 120 / 170", "250 / 250 / >300")}
PAPER_REPEATED = {"BatchBALD": ("120 / 120 / 130", "260 / 260 / 280"), "random": ("185 / 195 / 225", "not reached"),
                  "BALD": ("260 / 280 / not reached", "not reached")}


def mnist_paper_block(results: Path) -> list[str]:
    rows = [("BatchBALD", "batchbald"), ("BALD", "bald"), ("random", "random")]
    return (["Labels needed, 25% / median / 75% over seeds (Table 1 counting), beside the paper's Table 1; median test accuracy:", ""]
            + study_table([results / "mnist-paper" / "runs"], rows, (0.9, 0.95), [60, 100, 140, 180, 220, 260, 300], PAPER_MNIST)
            + ["", "Repeated MNIST:", ""]
            + study_table([results / "repeated-mnist-paper" / "runs"], rows, (0.9, 0.95), [60, 100, 140, 180, 220, 260, 300], PAPER_REPEATED)
            + ["", "Acquisition-size sweep (unfinished runs count as far as they got):", ""]
            + study_table([results / "mnist-sweep-paper" / "runs", results / "mnist-paper" / "runs"],
                          [(f"{n} b = {b}", f"{s}@{b}") for n, s in (("BALD", "bald"), ("BatchBALD", "batchbald")) for b in (5, 10, 20, 40)],
                          (0.9,), [100, 180, 300], strategy_of=lambda run: f"{run.config['strategy']}@{run.config['acquisition_size']}"))


def cpu_a_block(results: Path) -> list[str]:
    rows = [("BatchBALD", "batchbald"), ("BALD", "bald"), ("random", "random")]
    return study_table([results / "mnist" / "runs"], rows, (0.9, 0.95), [50, 100, 150, 200, 300], PAPER_MNIST, setting="mnist b=10")


def cpu_b_block(results: Path) -> list[str]:
    rows = [("BatchBALD", "batchbald"), ("random", "random"), ("BALD", "bald"), ("variation ratios", "variation_ratios"),
            ("mean std", "mean_std")]
    return study_table([results / "repeated-mnist" / "runs"], rows, (0.9,), [50, 100, 150], {k: v[:1] for k, v in PAPER_REPEATED.items()})


def badge_study_block(results: Path) -> list[str]:
    from batchal.report import penalty_matrix

    runs = find_runs([results / "badge-study" / "runs"])
    grouped: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run.setting][run.strategy].append(run)
    names, P, used = penalty_matrix({k: dict(v) for k, v in grouped.items()})
    means = sorted(((float(P[:, i].mean()), n) for i, n in enumerate(names)))
    finals = {setting: {s: _final(v) for s, v in curves.items()} for setting, curves in grouped.items()}
    return [f"Penalty-matrix column means over the {used} settings, every round a checkpoint as `batchal report` counts "
            "(lower is better; 3 seeds, so a win needs |t| > 4.303): " + ", ".join(f"{n} {m:.3f}" for m, n in means) + ".", "",
            "| setting | " + " | ".join(sorted(next(iter(finals.values())))) + " |", "|---|" + "---|" * len(next(iter(finals.values())))]\
        + [f"| {setting} (median final accuracy) | " + " | ".join(f"{finals[setting][s]:.3f}" for s in sorted(finals[setting])) + " |"
           for setting in sorted(finals)]


def new_strategies_block(results: Path) -> list[str]:
    from paired_tests import sources

    paths = sources("new-strategies")
    letter = [("typiclust", "typiclust"), ("cluster_margin", "cluster_margin"), ("bald on a 5-member ensemble", "bald (ensemble)"),
              ("power_epig", "power_epig"), ("batchbald", "batchbald"), ("badge", "badge"), ("bald (MC dropout)", "bald"),
              ("epig", "epig"), ("random", "random")]
    mnist = [("cluster_margin", "cluster_margin"), ("badge", "badge"), ("epig", "epig"), ("power_epig", "power_epig"),
             ("batchbald", "batchbald"), ("bald (MC dropout)", "bald"), ("typiclust", "typiclust"), ("random", "random")]

    def strategy_of(run) -> str:
        return run.config["strategy"] + (" (ensemble)" if run.config.get("posterior") == "ensemble" or run.config.get("ensemble_size") else "")

    return (["Letter b = 25:", ""] + study_table(paths, letter, (0.6, 0.7), [100, 200, 300], setting="letter b=25", penalty=True,
                                                 strategy_of=strategy_of)
            + ["", "MNIST b = 10, CPU protocol:", ""] + study_table(paths, mnist, (0.9, 0.95), [50, 100, 150, 200, 300], setting="mnist b=10",
                                                                 penalty=True, strategy_of=strategy_of))


def front_figures_block(results: Path) -> list[str]:
    """The README's measured figures: the demonstration's and the suite's wall time with their machine and load
    (results/benchmarks/main_job.txt, suite.txt) and BatchBALD's speed against the reference (batchbald_*.json)."""
    import json
    import re

    def header(path: Path) -> dict:
        text = path.read_text()
        return {"load": re.search(r"load before start: ([\d.]+)", text).group(1),
                "wall": int(re.search(r"wall clock: (\d+) s", text).group(1)), "text": text}

    demo, suite = header(results / "benchmarks" / "main_job.txt"), header(results / "benchmarks" / "suite.txt")
    passed = re.search(r"(\d+) passed", suite["text"]).group(1)
    skipped = re.search(r"(\d+) skipped", suite["text"])
    failed = re.search(r"(\d+) failed", suite["text"])
    speedups = []
    for name in ("synthetic", "mnist"):
        data = json.loads((results / "benchmarks" / f"batchbald_{name}.json").read_text())["sizes"]
        for entry in data.values():
            if "batchbald_redux 2.0.5" in entry:
                speedups.append(entry["batchbald_redux 2.0.5"]["seconds"] / entry["batchal lazy greedy"]["seconds"])
    minutes, seconds = divmod(suite["wall"], 60)
    return [f"- The demonstration (`batchal run`): {demo['wall']} s of wall clock on a 2-core machine at load {demo['load']} before "
            "start (`results/benchmarks/main_job.txt`, `bash benchmarks/time_main_job.sh`), plus the install: a few minutes.",
            f"- The suite: {minutes} min {seconds} s of wall clock on the same kind of machine at load {suite['load']} before start, "
            f"{int(passed):,} passed" + (f", {skipped.group(1)} skipped (CUDA only when chromium and Label Studio are there)" if skipped else "")
            + (f", **{failed.group(1)} failed**" if failed else "") + " (`results/benchmarks/suite.txt`, `bash benchmarks/time_suite.sh`).",
            f"- BatchBALD: {min(speedups):.0f}-{max(speedups):.0f}x faster than batchbald_redux 2.0.5 on the same inputs "
            "(`results/benchmarks/batchbald_*.txt`)."]


def noisy_annotators_block(results: Path) -> list[str]:
    """Votes, reliability and relabelling with a noisy annotator (results/noisy-annotators/rows.jsonl,
    ``scripts/noisy_annotators.py``): at the last checkpoint, consensus and test accuracy per setting,
    relabelling's paired gain and the annotators' estimated reliability."""
    import json

    from batchal.compare import bootstrap_mean

    rows = [json.loads(line) for line in (results / "noisy-annotators" / "rows.jsonl").read_text().splitlines()]
    seeds = sorted({r["seed"] for r in rows})
    last = max(c["labels"] for c in rows[0]["checkpoints"])
    at = {(r["setting"], r["seed"]): next(c for c in r["checkpoints"] if c["labels"] == last) for r in rows}
    fmt = lambda v, signed=False: f"{v[0]:+.3f} ({v[1]:+.3f} to {v[2]:+.3f})" if signed else f"{v[0]:.3f} ({v[1]:.3f}-{v[2]:.3f})"  # noqa: E731
    out = [f"Three simulated annotators on scikit-learn's digits, one of them (`cal`) replacing 30% of its labels by a random other "
           f"class; {last} labels each way, {len(seeds)} seeds, mean with a 95% bootstrap interval "
           "(`results/noisy-annotators/README.md`, `python scripts/noisy_annotators.py`):", "",
           "| | consensus accuracy (training labels right) | test accuracy |", "|---|---|---|"]
    for setting in ("one label per item", "relabelling", "two labels per item"):
        out.append(f"| {setting} | " + " | ".join(fmt(bootstrap_mean([at[(setting, s)][k] for s in seeds]))
                                              for k in ("consensus_accuracy", "test_accuracy")) + " |")
    diff = {k: bootstrap_mean([at[("relabelling", s)][k] - at[("one label per item", s)][k] for s in seeds])
            for k in ("consensus_accuracy", "test_accuracy")}
    reliability = {name: np.mean([r["reliability"][name]["agreement"] for r in rows if r["setting"] == "relabelling"])
                   for name in ("ann", "bea", "cal")}
    out += ["", f"Relabelling minus one label per item, paired by seed: consensus accuracy {fmt(diff['consensus_accuracy'], True)}, "
            f"test accuracy {fmt(diff['test_accuracy'], True)}. The reliability estimates with relabelling: "
            + ", ".join(f"{name} {v:.2f}" for name, v in reliability.items()) + "."]
    return out


def compare_evidence_block(results: Path) -> list[str]:
    """`batchal compare`'s speed (results/benchmarks/compare_speed.txt) and the rare-class study
    (results/imbalance-*/compare.json): balancing's effect on macro-F1 and minority discovery."""
    import json
    import re

    text = (results / "benchmarks" / "compare_speed.txt").read_text()
    times = []
    for label, words in (("workers", "in two worker processes"), ("ray", "on a local Ray cluster")):
        found = re.search(rf"^{label}: wall clock (\d+) s \(load before start ([\d.]+)\)", text, re.M)
        if found:
            minutes, seconds = divmod(int(found.group(1)), 60)
            times.append(f"{minutes} min {seconds} s {words} (load {found.group(2)} before start)")
    out = [f"- Speed: 5 strategies x 5 seeds on letter to 1,000 labels on 2 cores took {' and '.join(times)}; protocol and "
           "shortcuts in `results/benchmarks/compare_speed.txt`."]
    found = []
    for name in ("mnist", "letter"):
        path = results / f"imbalance-{name}" / "compare.json"
        if not path.exists():
            continue
        setting = json.loads(path.read_text())["settings"][0]["strategies"]
        better, found_sooner, pairs = 0, 0, 0
        for base in ("random", "margin", "bald", "batchbald", "badge"):
            if base + "-balanced" not in setting:
                continue
            plain, balanced = setting[base], setting[base + "-balanced"]
            pairs += 1
            better += balanced["macro_f1"]["estimate"] > plain["macro_f1"]["estimate"]
            median = lambda e: float(np.median([x if x is not None else np.inf for x in e["labels_to_every_class"]]))  # noqa: E731
            found_sooner += median(balanced) < median(plain)
        found.append(f"on {name} a higher mean macro-F1 at the budget for {better} of {pairs} strategies and every class found "
                     f"sooner (median over seeds) for {found_sooner} of {pairs}")
    if found:
        out.append("- Rare classes (the rarest at about 1% of the pool; 3 seeds, intervals in `results/imbalance/README.md`): "
                   f"balancing gave {'; '.join(found)}.")
    return out


BLOCKS = {"noisy-annotators": noisy_annotators_block, "compare-evidence": compare_evidence_block, "front-figures": front_figures_block, "paper-protocol": paper_protocol_block, "mnist-paper": mnist_paper_block, "cpu-a": cpu_a_block, "cpu-b": cpu_b_block,
          "badge-study": badge_study_block, "new-strategies": new_strategies_block, "badge-cost": badge_cost_block, "sweep": sweep_block, "faithful-cpu": faithful_block, "regression": regression_block, "badge-cpu": badge_cpu_block}


def regenerate(root: Path, results: Path) -> None:
    """Rewrite every block of root's README.md and results/README.md from the rows under ``results``."""
    files = [root / f for f in FILES]
    subprocess.run([sys.executable, str(REPO / "scripts" / "badge_report.py"), "--blocks-only", "--runs", str(results / "badge-paper" / "runs"),
                    "--readme", *map(str, files)], check=True, capture_output=True, cwd=REPO)
    for name, make in BLOCKS.items():
        lines = make(results)
        if not any(rewrite_block(f, name, lines) for f in files):
            raise SystemExit(f"no file has the block {name!r} (<!-- {name}:start --> ... <!-- {name}:end -->)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if not args.check:
        regenerate(REPO, REPO / "results")
        subprocess.run([sys.executable, str(REPO / "scripts" / "badge_sampler.py")], check=True, capture_output=True, cwd=REPO)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        for f in FILES:
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / f, copy / f)
        regenerate(copy, REPO / "results")
        # Whole generated READMEs: each script rewrites its own into a copy.
        sampler = copy / "badge-paper-kdpp"
        subprocess.run([sys.executable, str(REPO / "scripts" / "badge_sampler.py"), "--out", str(sampler)], check=True,
                       capture_output=True, cwd=REPO)
        whole = {"results/badge-paper-kdpp/README.md": sampler / "README.md"}
        differences = 0
        for f, regenerated in whole.items():
            diff = list(difflib.unified_diff((REPO / f).read_text().splitlines(), regenerated.read_text().splitlines(),
                                             f"{f} (committed)", f"{f} (regenerated from the rows)", lineterm="", n=0))
            differences += len(diff)
            print("\n".join(diff))
        for f in FILES:
            before, after = (REPO / f).read_text().splitlines(), (copy / f).read_text().splitlines()
            diff = list(difflib.unified_diff(before, after, f"{f} (committed)", f"{f} (regenerated from the rows)", lineterm="", n=0))
            differences += len(diff)
            print("\n".join(diff))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
