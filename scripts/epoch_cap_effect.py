"""What badge-paper's 300-epoch safety cap does to the comparison, where it binds most.

On letter b = 100 most rounds of the BADGE study stop at the cap a little short of 99% training
accuracy (the authors' code has no cap). Study badge-paper-epochs reruns that setting for its 7
algorithms with a cap of 3,000 epochs (BADGE, Marg, Coreset and Rand first), the same seeds (so the same initial labels and
first model). This script puts the two side by side:

    python scripts/epoch_cap_effect.py [--low results/badge-paper/runs/letter] \\
        [--high results/badge-paper-epochs/runs/letter] [--out results/badge-paper-epochs/README.md]

It reports, per cap: how many rounds hit it and the training accuracy they reached; each
algorithm's mean test accuracy at the checkpoints; the paired difference (high cap - low cap) per
algorithm and checkpoint with Holm's correction over all of them; and the penalty matrix among the
algorithms finished under both caps by the paper's rule (batchal.penalty), so that a change of
ordering shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from batchal.penalty import column_means, setting_penalty
from batchal.report import Run, find_runs
from batchal.significance import holm_adjusted, paired_p

# badge-paper's algorithms in the paper's order; those finished under both caps are compared.
ALL = ["badge", "albl", "coreset", "least_confidence", "margin", "entropy", "random"]
SHOWN = {"badge": "BADGE", "albl": "ALBL", "coreset": "Coreset", "least_confidence": "Conf", "margin": "Marg",
         "entropy": "Entropy", "random": "Rand"}


def load(folder: Path, b: int) -> dict[str, dict[int, Run]]:
    """strategy -> seed -> run, for the finished runs at batch size b in folder (none: empty)."""
    out: dict[str, dict[int, Run]] = {s: {} for s in ALL}
    try:
        runs = find_runs(sorted(folder.glob(f"*-b{b}-seed*")))
    except ValueError:  # no such run folders, or none with a finished round
        return out
    for run in runs:
        if run.config["strategy"] in out and "stop_reason" in run.rows[-1]:
            out[run.config["strategy"]][run.seed] = run
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--low", default="results/badge-paper/runs/letter", help="the runs with the study's cap")
    parser.add_argument("--high", default="results/badge-paper-epochs/runs/letter", help="the same runs with the higher cap")
    parser.add_argument("--b", type=int, default=100)
    parser.add_argument("--out", default="results/badge-paper-epochs/README.md")
    args = parser.parse_args()
    low, high = load(Path(args.low), args.b), load(Path(args.high), args.b)
    # the algorithms with 2 or more seeds finished under both caps (Rand among them: it sets the checkpoints)
    both = {s: set(low[s]) & set(high[s]) for s in ALL}
    algorithms = [s for s in ALL if len(both[s]) >= 2]
    seeds = sorted(set.intersection(*[both[s] for s in algorithms])) if algorithms else []
    if "random" not in algorithms or len(algorithms) < 2 or len(seeds) < 2:
        counts = {SHOWN[s]: (len(low[s]), len(high[s])) for s in ALL}
        raise SystemExit(f"needs 2 seeds finished by Rand and at least one other algorithm under both caps; finished "
                         f"(low cap, high cap): {counts}. Run python scripts/reproduce.py badge-paper-epochs --data-dir ../shared/data first.")
    config_cap = {name: runs["random"][seeds[0]].config["train"]["max_epochs"] for name, runs in (("low", low), ("high", high))}
    curves = {name: {s: {seed: {r["labelled"]: r["test_accuracy"] for r in runs[s][seed].rows} for seed in seeds} for s in algorithms}
              for name, runs in (("low", low), ("high", high))}
    lines = [f"# The epoch cap's effect: letter b = {args.b}, cap {config_cap['low']:,} against {config_cap['high']:,} epochs",
             "", f"Produced by `python scripts/epoch_cap_effect.py` from `{args.low}` (study badge-paper) and `{args.high}` "
             "(study badge-paper-epochs: `python scripts/reproduce.py badge-paper-epochs --data-dir ../shared/data --workers 2`), "
             f"seeds {', '.join(map(str, seeds))} (the same initial labels under both caps). Everything else is BADGE's "
             "protocol as in results/README.md, section badge-paper. Accuracies do not depend on the machine's load; the "
             "runs' seconds do (2-core CPU machine, two runs side by side, one thread each).", "",
             "## Training", "", "| cap | algorithm | rounds at the cap | median training accuracy at the end of a round | "
             "median epochs per round |", "|---|---|---|---|---|"]
    for name, runs in (("low", low), ("high", high)):
        for s in algorithms:
            trained = [r["training"] for seed in seeds for r in runs[s][seed].rows]
            capped = sum(bool(t.get("capped")) for t in trained)
            lines.append(f"| {config_cap[name]:,} | {SHOWN[s]} | {capped} of {len(trained)} | "
                         f"{np.median([t['train_accuracy'] for t in trained]):.3f} | {np.median([t['epochs'] for t in trained]):.0f} |")
    penalties = {name: setting_penalty(curves[name], 100, args.b) for name in curves}
    points = penalties["low"][2]
    lines += ["", f"## Mean test accuracy at the checkpoints ({', '.join(map(str, points))} labels: the low cap's), "
              "and the paired difference", "",
              "Difference = high cap - low cap, mean over the seeds; p: two-sided paired t-test over the seeds, then Holm's "
              "correction over every algorithm and checkpoint below. The first checkpoint is the shared start.", "",
              "| algorithm | labels | accuracy, low cap | accuracy, high cap | difference | p | Holm-adjusted p |",
              "|---|---|---|---|---|---|---|"]
    cells = []
    for s in algorithms:
        for point in points[1:]:
            a = np.array([curves["low"][s][seed][point] for seed in seeds])
            b = np.array([curves["high"][s][seed][point] for seed in seeds])
            cells.append((s, point, a.mean(), b.mean(), (b - a).mean(), paired_p(b - a)))
    adjusted = holm_adjusted([c[-1] for c in cells])
    for (s, point, a, b, d, p), q in zip(cells, adjusted):
        lines.append(f"| {SHOWN[s]} | {point:,} | {a:.3f} | {b:.3f} | {d:+.3f} | {p:.3f} | {q:.3f} |")
    significant = [(SHOWN[s], point, d) for (s, point, _, _, d, _), q in zip(cells, adjusted) if q <= 0.05]
    lines += ["", f"## The comparison under each cap (the paper's penalty rule among these {len(algorithms)})", "",
              "| cap | checkpoints | column means (lower is better) | ordering by mean accuracy at the last checkpoint |",
              "|---|---|---|---|"]
    means = {}
    for name in ("low", "high"):
        names, P, pts = penalties[name]
        means[name] = dict(zip(names, column_means(P)))
        last = pts[-1]
        mean_last = {s: np.mean([curves[name][s][seed][last] for seed in seeds]) for s in algorithms}
        lines.append(f"| {config_cap[name]:,} | {', '.join(map(str, pts))} | "
                     + ", ".join(f"{SHOWN[s]} {means[name][s]:.2f}" for s in sorted(algorithms, key=lambda s: means[name][s]))
                     + " | " + " > ".join(f"{SHOWN[s]} {mean_last[s]:.3f}" for s in sorted(algorithms, key=lambda s: -mean_last[s]))
                     + f" (at {last:,} labels) |")
    lines += ["", "## Reading", "",
              "- Differences between the caps that survive Holm's correction: "
              + (", ".join(f"{n} at {p:,} labels ({d:+.3f})" for n, p, d in significant) if significant else "none")
              + f" (of {len(cells)} tests, {len(seeds)} seeds each).",
              "- Penalty column means, low cap -> high cap: "
              + ", ".join(f"{SHOWN[s]} {means['low'][s]:.2f} -> {means['high'][s]:.2f}" for s in algorithms) + ".", ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
