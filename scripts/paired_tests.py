"""Per-setting significance behind results/README.md: for each setting of a study, the label counts
where one strategy beats another in the report's paired t-test (batchal.report.significant_wins),
and each setting's own penalty-matrix column means (the report's matrix pools all settings).

Usage: python scripts/paired_tests.py [STUDY ...]   (default: mnist-paper repeated-mnist-paper new-strategies)
Writes results/paired_tests.txt and prints it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from batchal.report import find_runs, group, penalty_matrix, significant_wins

ROOT = Path("results")


def sources(study: str) -> list[Path]:
    out = [ROOT / study / "runs"]
    if study == "new-strategies":  # the older strategies' runs, as scripts/reproduce.py reads them
        old = ROOT / "badge-study" / "runs" / "letter"
        out += sorted(p for p in old.glob("*-b25-seed*") if p.name.split("-")[0] in ("batchbald", "bald", "badge", "random"))
        out.append(ROOT / "mnist" / "runs")
    return [p for p in out if p.exists()]


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
    text = "\n".join(lines) + "\n"
    (ROOT / "paired_tests.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
