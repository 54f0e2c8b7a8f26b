"""BADGE's sampler and its batch diagnostics on its own protocol (issue 36, item 5).

1. Figure 1 of the BADGE paper: k-means++ seeding (strategy ``badge``) against k-DPP sampling
   (``kdpp``) on the same gradient embeddings, at b = 100 on letter, MNIST and CIFAR-10 (the JPEG
   copy), by badge-paper's protocol: test accuracy per label count (mean over seeds), the paired
   difference of the mean accuracy over the curve (a t-test over the seeds, Holm-corrected over the
   data sets) and the selection time per round (``seconds.select``, median over rounds and seeds).
   The paper's statement checked: k-means++ is about as accurate as k-DPP sampling and much faster.
2. The batch diagnostics the runs record every round (``batch_diagnostics``: the log-determinant of
   the batch's gradient-embedding Gram matrix, and the batch's mean gradient-embedding norm) for
   BADGE against Coreset and Marg at every batch size on each data set, and against k-DPP at
   b = 100: the median over seeds per round, and the share of rounds where BADGE's batch is at
   least as diverse and at least as large in norm as the other's. The paper's statements (its
   Figure 2) checked: k-means++ picks batches more diverse and of higher magnitude than k-DPP and
   than k-center. A log-determinant the
   run could not take (a singular Gram matrix: fewer independent embeddings than the batch) counts
   as minus infinity, the least diverse.

Usage: python scripts/badge_sampler.py [--badge results/badge-paper/runs] [--kdpp results/badge-paper-kdpp/runs]
       [--out results/badge-paper-kdpp]
Writes OUT/README.md and OUT/sampler.png; every figure in the README is computed here from the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

from batchal.significance import holm_adjusted, paired_p

DATASETS = ("letter", "mnist", "cifar10")


def runs(root: Path, dataset: str, strategy: str, b: int) -> dict[int, list[dict]]:
    """seed -> rows of the finished runs of one setting (the MNIST runs' folders end in -full-pool); a run still in
    progress is left out, so the figures move only when a run finishes."""
    out = {}
    for folder in sorted((root / dataset).glob(f"{strategy}-b{b}-seed*")):
        seed = int(folder.name.split("seed")[1].split("-")[0])
        rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines() if line.strip()]
        if rows and "stop_reason" in rows[-1]:
            out[seed] = rows
    return out


def curve(rows: list[dict]) -> dict[int, float]:
    return {r["labelled"]: r["test_accuracy"] for r in rows}


def figure_one(badge_root: Path, kdpp_root: Path) -> tuple[list[str], dict]:
    lines = ["| data set | seeds | k-means++ (BADGE) mean accuracy | k-DPP mean accuracy | difference (BADGE - k-DPP) | p | Holm p | "
             "select s/round, BADGE | select s/round, k-DPP | time ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    found, pvalues, rows_out = {}, [], []
    for dataset in DATASETS:
        badge, kdpp = runs(badge_root, dataset, "badge", 100), runs(kdpp_root, dataset, "kdpp", 100)
        seeds = sorted(set(badge) & set(kdpp))
        seeds = [s for s in seeds if set(curve(badge[s])) == set(curve(kdpp[s]))]  # finished alike
        if len(seeds) < 2:
            continue
        mean_b = [float(np.mean(list(curve(badge[s]).values()))) for s in seeds]
        mean_k = [float(np.mean(list(curve(kdpp[s]).values()))) for s in seeds]
        diff = [a - b for a, b in zip(mean_b, mean_k)]
        p = paired_p(diff)
        time_b = statistics.median(r["seconds"]["select"] for s in seeds for r in badge[s][:-1])
        time_k = statistics.median(r["seconds"]["select"] for s in seeds for r in kdpp[s][:-1])
        found[dataset] = {"seeds": seeds, "curves": ({s: curve(badge[s]) for s in seeds}, {s: curve(kdpp[s]) for s in seeds}),
                          "diff": float(np.mean(diff)), "p": p, "time": (time_b, time_k)}
        pvalues.append(p)
        rows_out.append(dataset)
    for dataset, holm in zip(rows_out, holm_adjusted(pvalues)):
        f = found[dataset]
        f["holm"] = holm
        lines.append(f"| {dataset} | {len(f['seeds'])} | {np.mean([np.mean(list(c.values())) for c in f['curves'][0].values()]):.4f} | "
                     f"{np.mean([np.mean(list(c.values())) for c in f['curves'][1].values()]):.4f} | {f['diff']:+.4f} | {f['p']:.3f} | {holm:.3f} | "
                     f"{f['time'][0]:.2f} | {f['time'][1]:.2f} | {f['time'][1] / max(f['time'][0], 1e-9):.2f}x |")
    return lines, found


def _series(per_seed: dict[int, list[dict]], seeds: list[int], key: str) -> dict[int, float]:
    """label count -> median over ``seeds`` of the batch diagnostic ``key`` (-inf: a singular Gram matrix)."""
    by_count: dict[int, list[float]] = {}
    for s in seeds:
        for r in per_seed[s]:
            d = r.get("batch_diagnostics")
            if d and d.get("mean_norm") is not None:
                by_count.setdefault(r["labelled"], []).append(d[key] if d[key] is not None else -math.inf)
    return {n: float(np.median(v)) for n, v in by_count.items() if len(v) == len(seeds)}


def _share(a: dict[int, float], b: dict[int, float]) -> tuple[int, int]:
    counts = sorted(set(a) & set(b))
    return sum(a[n] >= b[n] for n in counts), len(counts)


def diagnostics(badge_root: Path, kdpp_root: Path) -> tuple[list[str], dict]:
    """Per setting, the share of rounds where BADGE's batch is at least as diverse (log-det) and at
    least as large in gradient norm as each other sampler's: Coreset and Marg at every batch size,
    k-DPP at b = 100."""
    lines = ["| data set | b | against | seeds | BADGE log-det >= theirs | BADGE mean norm >= theirs | median log-det BADGE / theirs | "
             "median norm BADGE / theirs |", "|---|---|---|---|---|---|---|---|"]
    summary: dict[str, list[int]] = {}
    for dataset in DATASETS:
        for b in (100, 1_000, 10_000):
            badge = runs(badge_root, dataset, "badge", b)
            others = {"Coreset": runs(badge_root, dataset, "coreset", b), "Marg": runs(badge_root, dataset, "margin", b)}
            if b == 100:
                others["k-DPP"] = runs(kdpp_root, dataset, "kdpp", b)
            for name, other in others.items():
                seeds = sorted(set(badge) & set(other))
                if not seeds:
                    continue
                mine = {k: _series(badge, seeds, k) for k in ("logdet_gram", "mean_norm")}
                theirs = {k: _series(other, seeds, k) for k in ("logdet_gram", "mean_norm")}
                diverse, n_d = _share(mine["logdet_gram"], theirs["logdet_gram"])
                large, n_l = _share(mine["mean_norm"], theirs["mean_norm"])
                if not n_d:
                    continue
                total = summary.setdefault(name, [0, 0, 0, 0])
                total[0] += diverse
                total[1] += n_d
                total[2] += large
                total[3] += n_l

                def med(d: dict[int, float]) -> str:
                    value = float(np.median(list(d.values())))
                    return "-inf" if value == -math.inf else f"{value:.1f}"

                lines.append(f"| {dataset} | {b:,} | {name} | {len(seeds)} | {diverse} of {n_d} | {large} of {n_l} | "
                             f"{med(mine['logdet_gram'])} / {med(theirs['logdet_gram'])} | {med(mine['mean_norm'])} / {med(theirs['mean_norm'])} |")
    return lines, summary


def _verdict(share: float) -> str:
    return "supports" if share >= 0.75 else "contradicts" if share <= 0.25 else "neither"


def plot(found: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(found)), figsize=(4.2 * max(1, len(found)), 3.4), squeeze=False)
    for ax, (dataset, f) in zip(axes[0], found.items()):
        for label, curves in (("k-means++ (BADGE)", f["curves"][0]), ("k-DPP", f["curves"][1])):
            counts = sorted(next(iter(curves.values())))
            mean = [np.mean([c[n] for c in curves.values()]) for n in counts]
            ax.plot(counts, mean, marker="o", markersize=3, label=label)
        ax.set_title(f"{dataset}, b = 100, {len(f['seeds'])} seeds (BADGE protocol)", fontsize=9)
        ax.set_xlabel("labels")
        ax.set_ylabel("test accuracy (mean over seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--badge", default="results/badge-paper/runs")
    parser.add_argument("--kdpp", default="results/badge-paper-kdpp/runs")
    parser.add_argument("--out", default="results/badge-paper-kdpp")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table, found = figure_one(Path(args.badge), Path(args.kdpp))
    diag_table, summary = diagnostics(Path(args.badge), Path(args.kdpp))
    if not found:
        raise SystemExit(f"no setting has finished BADGE and k-DPP runs of the same seeds under {args.badge} and {args.kdpp}")
    plot(found, out / "sampler.png")
    tie = all(f["holm"] >= 0.05 for f in found.values())
    ratios = [f["time"][1] / max(f["time"][0], 1e-9) for f in found.values()]
    slowest, fastest = min(ratios), max(ratios)
    lines = [
        "# BADGE's sampler (Figure 1) and batch diagnostics on its own protocol",
        "",
        "Written by `python scripts/badge_sampler.py` from the rows of `results/badge-paper/runs` (BADGE, Coreset, Marg) and "
        "`results/badge-paper-kdpp/runs` (k-DPP: `python scripts/reproduce.py badge-paper-kdpp --data-dir ../shared/data`), "
        "badge-paper's protocol (REFERENCE.md 4b: the paper's MLP trained from scratch to 99% training accuracy each round, "
        "100 random initial labels), on the 2-core CPU machine, one thread per run. CIFAR-10 is the lossy JPEG copy.",
        "",
        "## k-means++ against k-DPP sampling (the paper's Figure 1), b = 100",
        "",
        "Mean accuracy: over every label count of the curve (100 to 1,100), then over the seeds; the difference is paired by "
        "seed, its p a two-sided paired t-test over the seeds, Holm-corrected over the data sets. Time: `seconds.select` "
        "per round (both sample from the same gradient embeddings; scoring the pool is the same pass for both).",
        "",
        *table,
        "",
        "![k-means++ and k-DPP learning curves](sampler.png)",
        "",
        ("**Accuracy: the paper's statement holds here**: no data set separates k-means++ from k-DPP sampling after Holm's "
         "correction (a tie is a tie)." if tie else "**Accuracy: the paper's statement holds only in part**: a data set separates "
         "the two samplers after Holm's correction (the table)."),
        "",
        (f"**Time: k-DPP took {slowest:.1f}x to {fastest:.1f}x BADGE's selection time**" + (
            ": the paper's run-time statement (k-DPP much slower) holds." if fastest > 1 else
            ": the paper's run-time statement (k-DPP much slower) **does not hold** for batchal's k-DPP, a swap-chain MCMC of "
            "ceil(5 b ln b) steps (`batchal.acquisition.kdpp`), which at b = 100 is cheaper than BADGE's 100 sequential k-means++ "
            "passes over the pool; the chain's cost grows as b^3 ln b, so the order should reverse at larger b (a guess: b = 1,000 "
            "was not run). "
            "The paper's sampler and its step count are not in the paper's text, so this compares implementations, not algorithms.")),
        "",
        "## Batch diagnostics (the paper's Figure 2), every batch size",
        "",
        "Per round, the median over seeds of the batch's log-determinant of its gradient-embedding Gram matrix (diversity) "
        "and of its mean gradient-embedding norm (magnitude: uncertainty), as each run recorded them (-inf: a singular Gram "
        "matrix); rounds counted where both strategies have every seed. Medians over those rounds in the last two columns.",
        "",
        *diag_table,
        "",
        "Over every round of every setting above, the share where BADGE's batch is at least as diverse (log-det) and at least "
        "as large in gradient norm as the other sampler's:",
        "",
        *[f"- against {name}: diverse in {d} of {nd} rounds ({d / max(nd, 1):.0%}: {_verdict(d / max(nd, 1))}), "
          f"large in {l} of {nl} ({l / max(nl, 1):.0%}: {_verdict(l / max(nl, 1))})"
          for name, (d, nd, l, nl) in summary.items()],
        "",
        "The paper's statements (its Figure 2, there with FF-k-center on the gradient embedding where Coreset here is k-center on "
        "the penultimate features): k-means++ picks batches both more diverse and of higher magnitude than k-DPP sampling, and "
        "than k-center. A share near 100% supports a statement, near 50% does not, below it contradicts it. Marg is the "
        "uncertainty-only baseline: BADGE should be more diverse than it, not necessarily larger in norm. Rule for the words: "
        "a share of at least 75% supports \"BADGE's batch is at least as ...\", at most 25% contradicts it, between is neither.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
