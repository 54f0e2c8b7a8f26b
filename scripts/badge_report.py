"""The BADGE study's summary by the paper's own rules (batchal.penalty; REFERENCE.md 4b):
learning curves per setting, the pairwise penalty matrix overall and per batch size with its
column means, and the CDF of normalised errors.

    python scripts/badge_report.py [--runs results/badge-paper/runs] [--out results/badge-paper/report] [--readme results/README.md]

A setting enters the matrices with the repeats every one of its algorithms has finished
(at least 2); what was left out, and why, is listed in the report. Each matrix comes twice: by
the paper's rule (uncorrected t-tests) and with Holm's correction over each setting's tests. The
paper's findings are checked against both (batchal.penalty.paper_findings) and the table is also
written between the markers <!-- badge-findings:start --> and <!-- badge-findings:end --> of the
--readme file, when it has them. The headline figures (what finished, column means by both rules,
normalised errors) go between <!-- badge-headline:start --> and <!-- badge-headline:end --> of
every --readme file that has them, so no prose quotes a number the runs no longer give.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from batchal.penalty import column_means, normalised_errors, paper_findings, setting_penalty, weighted_cdf
from batchal.report import find_runs, write_report

PAPER_ORDER = ["badge", "albl", "coreset", "least_confidence", "margin", "entropy", "random"]
DATA_ORDER = {"letter": 0, "mnist": 1, "cifar10": 2}
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


def ranked(values: dict[str, float], digits: int = 2) -> str:
    """'BADGE 0.07, Marg 0.31, ...': lowest first, ties in the paper's order."""
    order = sorted(values, key=lambda n: (round(values[n], digits), PAPER_ORDER.index(n)))
    return ", ".join(f"{SHOWN[n]} {values[n]:.{digits}f}" for n in order)


def headline(paper: dict, holm: dict, errors: dict[str, tuple[float, float]], inclusive: dict,
             findings: list = (), findings_holm: list = ()) -> list[str]:
    """The study's headline figures as a Markdown list, generated from the runs (for the README files)."""
    missing = [f"{d} b={b:,}" for d in DATA_ORDER for b in (100, 1_000, 10_000) if (d, b) not in paper]
    if not paper:
        return ["- No setting has every algorithm with 2 finished repeats yet."]
    repeats = {k: len(next(iter(v[3].values()))) for k, v in paper.items()}
    if len(set(repeats.values())) == 1:
        where = (f" ({', '.join(f'{d} b={b:,}' for d, b in paper)}), each with {next(iter(repeats.values()))} "
                 "finished repeats of all 7 algorithms")
    else:  # the second block of seeds has reached some settings
        where = ", with these finished repeats of all 7 algorithms: " + ", ".join(f"{d} b={b:,} {n}" for (d, b), n in repeats.items())
    means = {n: float(m) for n, m in zip(PAPER_ORDER, column_means(sum(v[1] for v in paper.values())))}
    means_holm = {n: float(m) for n, m in zip(PAPER_ORDER, column_means(sum(v[1] for v in holm.values())))}
    means_incl = {n: float(m) for n, m in zip(PAPER_ORDER, column_means(sum(v[1] for v in inclusive.values())))}
    lines = [f"- **{len(paper)} of the paper's 21 MLP settings** in the matrices{where}"
             + (f"; not yet: {', '.join(missing)}" if missing else "")
             + ". The other 12 (SVHN and the OpenML sets 155, 156 and 184, each at b = 100, 1,000 and 10,000) cannot be had "
             "offline here; every finding below is judged on letter, MNIST and CIFAR-10 alone.",
             f"- Penalty column means by the paper's rule (the authors' checkpoints, uncorrected paired t-tests, lower is better): "
             f"{ranked(means)}.",
             f"- With Holm's correction within each setting: {ranked(means_holm)}.",
             f"- Sensitivity, the inclusive checkpoint rule (random's first count past 99% of its final accuracy kept as a "
             f"checkpoint; uncorrected): {ranked(means_incl)}."]
    if findings and findings_holm:
        lines.append(f"- The verdict on the paper's headline finding (BADGE has the lowest overall column mean): by the paper's "
                     f"rule, **{findings[0][2]}**; with Holm's correction within each setting, **{findings_holm[0][2]}**.")
    if errors:
        lines.append("- Mean normalised error (error / Rand's error, lower is better): "
                     f"{ranked({n: e[0] for n, e in errors.items()}, 3)}; share of weighted checkpoints below Rand's error: "
                     + ", ".join(f"{SHOWN[n]} {errors[n][1]:.0%}" for n in sorted(errors, key=lambda n: -errors[n][1]) if n != "random") + ".")
    return lines


def rewrite_block(path: Path, name: str, lines: list[str]) -> bool:
    """Replace what stands between <!-- NAME:start --> and <!-- NAME:end --> in PATH; False if it has no such block."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if not path.is_file() or start not in (text := path.read_text()) or end not in text:
        return False
    head, rest = text.split(start, 1)
    path.write_text(head + start + "\n" + "\n".join(lines) + "\n" + end + rest.split(end, 1)[1])
    return True


def penalty_figure(panels: list, path: Path) -> None:
    """Heat maps of the paper-rule penalty matrices (overall and per b), the paper's figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [SHOWN[n] for n in PAPER_ORDER]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (title, P, n) in zip(axes[0], panels):
        top = max(float(P.max()), 1e-9)
        ax.imshow(P, cmap="Reds", vmin=0, vmax=top)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{P[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if P[i, j] > 0.6 * top else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        best = min(zip(column_means(P), labels))
        ax.set_title(f"{title} ({n} setting{'s' if n != 1 else ''})\nlowest column mean: {best[1]} {best[0]:.2f}", fontsize=9)
    fig.suptitle("P[row, column]: share of checkpoints where row beats column (paired t-test, p < 0.05)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="results/badge-paper/runs")
    parser.add_argument("--out", default="results/badge-paper/report")
    parser.add_argument("--readme", nargs="*", default=["results/README.md", "README.md"],
                        help="the files whose findings and headline blocks are rewritten (where they have them)")
    parser.add_argument("--blocks-only", action="store_true",
                        help="only rewrite the generated blocks of --readme (no report, no figures): what tests/test_generated.py checks")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.blocks_only:
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
             "| setting | " + " | ".join(SHOWN[s] for s in PAPER_ORDER) + " | used in the matrices | rounds at the epoch cap "
             "(median training accuracy there) |",
             "|" + "---|" * (len(PAPER_ORDER) + 3)]
    # (data set, b) -> (algorithms, P, checkpoints, curves): by the paper's rule, and with Holm's correction
    paper, holm, inclusive = {}, {}, {}
    accuracy_rows: list[str] = []
    cdf_values: dict[str, list] = defaultdict(list)
    for (dataset, b), algos in sorted(by_setting.items(), key=lambda kv: (DATA_ORDER.get(kv[0][0], 9), kv[0])):
        done = {s: sorted(seed for seed, run in algos.get(s, {}).items() if finished(run)) for s in PAPER_ORDER}
        common = sorted(set.intersection(*[set(v) for v in done.values()])) if all(done.values()) else []
        used = len(common) >= 2
        trained = [r["training"] for runs_ in algos.values() for run in runs_.values() for r in run.rows if "training" in r]
        capped = [t["train_accuracy"] for t in trained if t.get("capped")]
        cap_text = f"{len(capped)} of {len(trained)}" + (f" ({np.median(capped):.3f})" if capped else "")
        lines.append(f"| {dataset} b={b} | " + " | ".join(str(len(done[s])) for s in PAPER_ORDER)
                     + f" | {'yes, ' + str(len(common)) + ' repeats' if used else 'no (needs 2 repeats of every algorithm)'} | {cap_text} |")
        if not used:
            continue
        curves = {s: {seed: {r["labelled"]: r["test_accuracy"] for r in algos[s][seed].rows} for seed in common} for s in PAPER_ORDER}
        initial = algos["random"][common[0]].config["initial_size"]
        names, P, points = setting_penalty(curves, initial, b)
        P_holm = setting_penalty(curves, initial, b, correction="holm")[1]
        _, P_incl, points_incl = setting_penalty(curves, initial, b, rule="inclusive")
        order = [names.index(n) for n in PAPER_ORDER]  # the paper's order of rows and columns
        names, P, P_holm, P_incl = PAPER_ORDER, P[np.ix_(order, order)], P_holm[np.ix_(order, order)], P_incl[np.ix_(order, order)]
        paper[(dataset, b)] = (names, P, points, curves)
        holm[(dataset, b)] = (names, P_holm, points, curves)
        inclusive[(dataset, b)] = (names, P_incl, points_incl, curves)
        for name, values in normalised_errors(curves, points).items():
            cdf_values[name] += values
        last = points[-1] if points else None
        if last is not None:
            accuracy_rows.append(f"| {dataset} b={b} | {last:,} | " + " | ".join(
                f"{np.mean([curves[s][seed][last] for seed in common]):.3f}" for s in PAPER_ORDER) + " |")
    lines += [""]
    if accuracy_rows:
        lines += ["## Mean test accuracy at each setting's last checkpoint", "",
                  "| setting | labels | " + " | ".join(SHOWN[s] for s in PAPER_ORDER) + " |", "|" + "---|" * (len(PAPER_ORDER) + 2)]
        lines += accuracy_rows + [""]
    groups = [("Overall", list(paper))] if paper else []
    groups += [(f"b = {b:,}", [k for k in paper if k[1] == b]) for b in sorted({k[1] for k in paper})]
    for title, group in groups:
        total = sum(paper[k][1] for k in group)
        lines += [f"## Penalty matrix: {title} ({len(group)} setting(s): "
                  + ", ".join(f"{d} b={b} at {paper[(d, b)][2]}" for d, b in group) + ")", "",
                  "P[row, column]: the checkpoints (as a fraction of each setting's) where the row algorithm beat the column "
                  "algorithm by a two-sided paired t-test, p < 0.05 (no correction for the many comparisons, as the paper).", ""]
        lines += matrix_table(PAPER_ORDER, total) + [""]
        lines += ["With Holm's correction over each setting's tests (checkpoints x pairs):", ""]
        lines += matrix_table(PAPER_ORDER, sum(holm[k][1] for k in group)) + [""]
    findings = []
    if paper:
        if not args.blocks_only:
            penalty_figure([(t.lower(), sum(paper[k][1] for k in g), len(g)) for t, g in groups], out / "penalty_matrices.png")
        lines += ["![penalty matrices](penalty_matrices.png)", ""]
        for (finding, measured, verdict), (_, measured_h, verdict_h) in zip(paper_findings(paper, shown=SHOWN), paper_findings(holm, shown=SHOWN)):
            findings.append(f"| {finding} | {measured} | **{verdict}** | {measured_h} | **{verdict_h}** |")
    findings = ["| the paper's finding | measured (the paper's rule: uncorrected t-tests; column means, lower is better) | "
                "verdict | measured (Holm's correction within each setting) | verdict |", "|---|---|---|---|---|"] + (
        findings or ["| every finding | no setting has every algorithm with 2 finished repeats | cannot be judged | | |"])
    lines += ["## The paper's findings", "", f"Settings used: {', '.join(f'{d} b={b}' for d, b in paper) or 'none'} "
              "(9 of the paper's 21 MLP settings; checkpoints by the authors' rule). "
              "The findings table of results/README.md is this one.", ""] + findings + [""]
    if inclusive:
        lines += ["## Sensitivity: the inclusive checkpoint rule", "",
                  "The authors' code (agg_results.py) stops the checkpoints before random's first count past 99% of its final "
                  "accuracy; batchal counted that count too before session 11. Under that inclusive rule "
                  "(uncorrected t-tests):", "", "| group | checkpoints | column means (lower is better) |", "|---|---|---|"]
        for title, group in groups:
            total = sum(inclusive[k][1] for k in group)
            means_incl = {n: float(m) for n, m in zip(PAPER_ORDER, column_means(total))}
            lines.append(f"| {title} | " + "; ".join(f"{d} b={b}: {inclusive[(d, b)][2]}" for d, b in group) + f" | {ranked(means_incl)} |")
        lines += ["", "| the paper's finding | measured (inclusive rule) | verdict |", "|---|---|---|"]
        lines += [f"| {finding} | {measured} | **{verdict}** |" for finding, measured, verdict in paper_findings(inclusive, shown=SHOWN)]
        lines += [""]
    errors: dict[str, tuple[float, float]] = {}
    for name in PAPER_ORDER:
        if name in cdf_values:
            v = np.array([x for x, _ in cdf_values[name]])
            w = np.array([w for _, w in cdf_values[name]])
            errors[name] = ((v * w).sum() / w.sum(), (w * (v < 1)).sum() / w.sum())
    if cdf_values and not args.blocks_only:
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
    if errors:
        lines += ["## Normalised error CDF", "", "![CDF](normalised_error_cdf.png)", ""]
        lines += ["| algorithm | mean normalised error | share of checkpoints below Rand's error |", "|---|---|---|"]
        lines += [f"| {SHOWN[name]} | {errors[name][0]:.3f} | {errors[name][1]:.2f} |" for name in errors]
        lines.append("")
    top = headline(paper, holm, errors, inclusive, paper_findings(paper, shown=SHOWN) if paper else [],
                   paper_findings(holm, shown=SHOWN) if paper else [])
    if not args.blocks_only:
        curves_report = write_report([args.runs], out / "curves", thresholds=[0.5, 0.7, 0.9], title="BADGE's protocol: learning curves")
        lines += [f"Learning curves per setting: [{curves_report.relative_to(out)}]({curves_report.relative_to(out)})", ""]
        lines[4:4] = ["## Headline", ""] + top + [""]
        (out / "README.md").write_text("\n".join(lines))
        print(out / "README.md")
    for readme in map(Path, args.readme):
        for name, block in (("badge-findings", findings), ("badge-headline", top)):
            if rewrite_block(readme, name, block):
                print(f"{readme}: {name} rewritten")


if __name__ == "__main__":
    sys.exit(main())
