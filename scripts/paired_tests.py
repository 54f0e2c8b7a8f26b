"""Per-setting significance behind results/README.md: for each setting of a study, the label counts
where one strategy beats another in a two-sided paired t-test over seeds (95%), and each setting's
own penalty-matrix column means (the report's matrix pools all settings).

Usage: python scripts/paired_tests.py [STUDY ...]   (default: mnist-paper repeated-mnist-paper new-strategies)
Writes results/paired_tests.txt and prints it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import stats

from batchal.report import find_runs, group, penalty_matrix

ROOT = Path("results")


def sources(study: str) -> list[Path]:
    out = [ROOT / study / "runs"]
    if study == "new-strategies":  # the older strategies' runs, as scripts/reproduce.py reads them
        old = ROOT / "badge-study" / "runs" / "letter"
        out += sorted(p for p in old.glob("*-b25-seed*") if p.name.split("-")[0] in ("batchbald", "bald", "badge", "random"))
        out.append(ROOT / "mnist" / "runs")
    return [p for p in out if p.exists()]


def wins(a, b) -> list[int]:
    """Label counts (run by every seed of both) where a's accuracy beats b's, paired by seed."""
    acc_a = {run.config["seed"]: {r["labelled"]: r["test_accuracy"] for r in run.rows} for run in a}
    acc_b = {run.config["seed"]: {r["labelled"]: r["test_accuracy"] for r in run.rows} for run in b}
    seeds = sorted(set(acc_a) & set(acc_b))
    if len(seeds) < 2:
        return []
    counts = sorted(set.intersection(*[set(acc_a[s]) & set(acc_b[s]) for s in seeds]))
    critical = stats.t.ppf(0.975, len(seeds) - 1)
    out = []
    for n in counts:
        d = np.array([acc_a[s][n] - acc_b[s][n] for s in seeds])
        sd = d.std(ddof=1)
        if sd > 0 and d.mean() / (sd / np.sqrt(len(d))) > critical:
            out.append(n)
    return out


def main() -> None:
    studies = sys.argv[1:] or ["mnist-paper", "repeated-mnist-paper", "new-strategies"]
    lines = [f"# command: python scripts/paired_tests.py {' '.join(studies)}"]
    for study in studies:
        grouped = group(find_runs(sources(study)))
        for setting, curves in grouped.items():
            names, P, _ = penalty_matrix({setting: curves})
            means = sorted(((float(P[:, i].mean()), n) for i, n in enumerate(names)))
            lines += ["", f"## {study}: {setting}", "penalty column means (this setting alone): "
                      + ", ".join(f"{n} {m:.3f}" for m, n in means)]
            for a in sorted(curves):
                for b in sorted(curves):
                    if a != b:
                        w = wins(curves[a], curves[b])
                        lines.append(f"{a} beats {b} at: {', '.join(map(str, w)) if w else 'no label count'}")
    text = "\n".join(lines) + "\n"
    (ROOT / "paired_tests.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
