"""Per-setting significance behind results/README.md: for each setting of a study, the label counts
where one strategy beats another in the report's paired t-test (batchal.report.significant_wins),
and each setting's own penalty-matrix column means (the report's matrix pools all settings).

Usage: python scripts/paired_tests.py [STUDY ...]   (default: mnist-paper repeated-mnist-paper new-strategies)
Writes results/paired_tests.txt and prints it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from batchal.experiment import labels_to_reach
from batchal.report import curve, find_runs, group, penalty_matrix, significant_wins
from batchal.significance import holm_adjusted, paired_p

ROOT = Path("results")


def sources(study: str) -> list[Path]:
    out = [ROOT / study / "runs"]
    if study == "new-strategies":  # the older strategies' runs, as scripts/reproduce.py reads them
        old = ROOT / "badge-study" / "runs" / "letter"
        out += sorted(p for p in old.glob("*-b25-seed*") if p.name.split("-")[0] in ("batchbald", "bald", "badge", "random"))
        out.append(ROOT / "mnist" / "runs")
    return [p for p in out if p.exists()]


def holm_survivors(curves: dict, a: str, b: str, alpha: float = 0.05) -> tuple[list[int], int]:
    """Label counts where a beats b by a two-sided paired t-test that survives Holm's correction
    over all the counts the pair is compared at; and how many counts that is."""
    seeds = sorted({r.seed for r in curves[a]} & {r.seed for r in curves[b]})
    if len(seeds) < 2:
        return [], 0
    ca, acc_a = curve(sorted((r for r in curves[a] if r.seed in seeds), key=lambda r: r.seed))
    cb, acc_b = curve(sorted((r for r in curves[b] if r.seed in seeds), key=lambda r: r.seed))
    counts = sorted(set(ca.tolist()) & set(cb.tolist()))
    tests = []
    for c in counts:
        d = acc_a[:, list(ca).index(c)] - acc_b[:, list(cb).index(c)]
        if not np.all(d == 0):
            tests.append((paired_p(d), c, float(d.mean())))
    adjusted = holm_adjusted([p for p, _, _ in tests])
    won = [c for (_, c, mean), p in zip(tests, adjusted) if p <= alpha and mean > 0]
    return sorted(won), len(tests)


def per_seed_order(curves: dict, a: str, b: str, threshold: float) -> str:
    """Per seed both ran: who reached ``threshold`` with fewer labels."""
    runs_a = {r.seed: r for r in curves[a]}
    runs_b = {r.seed: r for r in curves[b]}
    wins = {a: 0, b: 0, "tie": 0}
    for seed in sorted(set(runs_a) & set(runs_b)):
        la = labels_to_reach(runs_a[seed].rows, threshold, runs_a[seed].config["acquisition_size"])
        lb = labels_to_reach(runs_b[seed].rows, threshold, runs_b[seed].config["acquisition_size"])
        la, lb = la if la is not None else 10**9, lb if lb is not None else 10**9
        wins[a if la < lb else b if lb < la else "tie"] += 1
    return f"labels to {threshold:.0%} per seed: {a} fewer in {wins[a]}, {b} fewer in {wins[b]}, equal in {wins['tie']}"


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
            compared = significant_wins(curves)
            for (a, b), won in (compared[1] if compared else {}).items():
                lines.append(f"{a} beats {b} at: {', '.join(map(str, won)) if won else 'no label count'}")
            lines.append("after Holm's correction over each pair's label counts (two-sided paired t-test, family-wise 5%):")
            for (a, b) in (compared[1] if compared else {}):
                survived, tested = holm_survivors(curves, a, b)
                lines.append(f"  {a} beats {b} at: {', '.join(map(str, survived)) if survived else 'no label count'} (of {tested} counts)")
            if "mnist" in setting:
                for a, b in (("batchbald", "bald"),):
                    if a in curves and b in curves:
                        for threshold in (0.9, 0.95):
                            lines.append(per_seed_order(curves, a, b, threshold))
    text = "\n".join(lines) + "\n"
    (ROOT / "paired_tests.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
