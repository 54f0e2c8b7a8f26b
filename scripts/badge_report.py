"""The BADGE study's summary by the paper's own rules (batchal.penalty; REFERENCE.md 4b):
learning curves per setting, the pairwise penalty matrix overall and per batch size with its
column means, and the CDF of normalised errors.

    python scripts/badge_report.py [--runs results/badge-paper/runs] [--out results/badge-paper/report]

A setting enters the matrices with the repeats every one of its algorithms has finished
(at least 2); what was left out, and why, is listed in the report.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from batchal.penalty import column_means, normalised_errors, setting_penalty, weighted_cdf
from batchal.report import find_runs, write_report

PAPER_ORDER = ["badge", "albl", "coreset", "least_confidence", "margin", "entropy", "random"]
SHOWN = {"least_confidence": "Conf", "margin": "Marg", "entropy": "Entropy", "random": "Rand", "badge": "BADGE",
         "albl": "ALBL", "coreset": "Coreset"}


def finished(run) -> bool:
    return bool(run.rows) and "stop_reason" in run.rows[-1]


def matrix_table(names: list[str], P: np.ndarray) -> list[str]:
    head = "| wins over -> | " + " | ".join(SHOWN.get(n, n) for n in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for i, n in enumerate(names):
        lines.append(f"| **{SHOWN.get(n, n)}** | " + " | ".join(f"{P[i, j]:.2f}" for j in range(len(names))) + " |")
    means = column_means(P)
    lines.append("| column mean (lower is better) | " + " | ".join(f"**{m:.2f}**" for m in means) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results/badge-paper/runs")
    parser.add_argument("--out", default="results/badge-paper/report")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = find_runs([args.runs])
    by_setting: dict[tuple[str, int], dict[str, dict[int, object]]] = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        by_setting[(run.config["dataset"], run.config["acquisition_size"])][run.config["strategy"]][run.seed] = run
    lines = ["# BADGE's protocol: penalty matrix and normalised errors", "",
             "Produced by `python scripts/badge_report.py` from the runs of `python scripts/reproduce.py badge-paper` "
             "(REFERENCE.md 4b; deviations in results/README.md). CIFAR-10 here is the lossy JPEG copy: accuracies on it are "
             "close to, not equal to, published CIFAR-10 numbers.", "",
             "## Runs finished (repeats per algorithm)", "",
             "| setting | " + " | ".join(SHOWN[s] for s in PAPER_ORDER) + " | used in the matrices |",
             "|" + "---|" * (len(PAPER_ORDER) + 2)]
    overall = {}
    per_b: dict[int, dict] = defaultdict(dict)
    cdf_values: dict[str, list] = defaultdict(list)
    for (dataset, b), algos in sorted(by_setting.items()):
        done = {s: sorted(seed for seed, run in algos.get(s, {}).items() if finished(run)) for s in PAPER_ORDER}
        common = sorted(set.intersection(*[set(v) for v in done.values()])) if all(done.values()) else []
        used = len(common) >= 2
        lines.append(f"| {dataset} b={b} | " + " | ".join(str(len(done[s])) for s in PAPER_ORDER)
                     + f" | {'yes, ' + str(len(common)) + ' repeats' if used else 'no (needs 2 repeats of every algorithm)'} |")
        if not used:
            continue
        curves = {s: {seed: {r["labelled"]: r["test_accuracy"] for r in algos[s][seed].rows} for seed in common} for s in PAPER_ORDER}
        initial = algos["random"][common[0]].config["initial_size"]
        names, P, points = setting_penalty(curves, initial, b)
        overall[(dataset, b)] = (names, P, points)
        per_b[b][(dataset, b)] = (names, P, points)
        for name, values in normalised_errors(curves, points).items():
            cdf_values[name] += values
    lines += [""]
    for title, group in [("Overall", overall)] + [(f"b = {b:,}", g) for b, g in sorted(per_b.items())]:
        if not group:
            continue
        names = next(iter(group.values()))[0]
        total = sum(P for _, P, _ in group.values())
        lines += [f"## Penalty matrix: {title} ({len(group)} setting(s): "
                  + ", ".join(f"{d} b={b} at {pts}" for (d, b), (_, _, pts) in group.items()) + ")", "",
                  "P[row, column]: the checkpoints (as a fraction of each setting's) where the row algorithm beat the column "
                  "algorithm by a two-sided paired t-test, p < 0.05 (no correction for the many comparisons, as the paper).", ""]
        lines += matrix_table(names, total) + [""]
    if cdf_values:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        grid = np.linspace(0.3, 1.2, 181)
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in PAPER_ORDER:
            if name in cdf_values:
                ax.plot(grid, weighted_cdf(cdf_values[name], grid), label=SHOWN[name])
        ax.set_xlabel("normalised error (error / Rand's error)")
        ax.set_ylabel("weighted share of checkpoints")
        ax.set_title("BADGE's protocol: CDF of normalised errors (higher-left is better)")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "normalised_error_cdf.png", dpi=120)
        plt.close(fig)
        lines += ["## Normalised error CDF", "", "![CDF](normalised_error_cdf.png)", ""]
        lines += ["| algorithm | mean normalised error | share of checkpoints below Rand's error |", "|---|---|---|"]
        for name in PAPER_ORDER:
            if name in cdf_values:
                v = np.array([x for x, _ in cdf_values[name]])
                w = np.array([w for _, w in cdf_values[name]])
                lines.append(f"| {SHOWN[name]} | {(v * w).sum() / w.sum():.3f} | {(w * (v < 1)).sum() / w.sum():.2f} |")
        lines.append("")
    curves_report = write_report([args.runs], out / "curves", thresholds=[0.5, 0.7, 0.9], title="BADGE's protocol: learning curves")
    lines += [f"Learning curves per setting: [{curves_report.relative_to(out)}]({curves_report.relative_to(out)})", ""]
    (out / "README.md").write_text("\n".join(lines))
    print(out / "README.md")


if __name__ == "__main__":
    sys.exit(main())
