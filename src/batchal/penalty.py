"""BADGE's summary of many settings, as its code computes it (JordanAsh/badge,
scripts/agg_results.py; REFERENCE.md section 4b).

Checkpoints of a setting (initial size n0, batch size b): n0, n0 + b, n0 + 2b, n0 + 4b, ...
(doubling), stopping before the first one where random's mean accuracy exceeds 99% of its
final accuracy (its mean at the last label count all algorithms share), and only counts every
algorithm reached. That is the authors' rule: in ``plot_matrix`` and ``plot_cdfs`` of
JordanAsh/badge's scripts/agg_results.py the loop computes the next count's random accuracy and
breaks *before* appending it (``if acc / endAcc > stopFrac: break; checkpoints.append(samp)``),
and n0 is always a checkpoint. ``rule="inclusive"`` (batchal's rule before session 11, and the
paper's prose "up to the first budget where ...") also keeps that first count: a sensitivity row. At each checkpoint and for each pair (i, j), a two-sided one-sample t-test
on the paired accuracy differences over the repeats both ran; p < 0.05 adds 1 / (number of
checkpoints of the setting) to P[winner, loser]. Column means divide the column sums by the
number of algorithms (diagonal included): lower is better. The normalised error of an
algorithm is its error divided by random's at the same checkpoint, each checkpoint weighted
1 / (the setting's number of checkpoints), shown as a weighted CDF.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from batchal.significance import holm_adjusted, paired_p


#: The checkpoint rules: the authors' code's (the default) and the inclusive one (a sensitivity row).
RULES = ("authors", "inclusive")


def checkpoints(initial: int, b: int, counts: list[int], random_mean: dict[int, float], rule: str = "authors") -> list[int]:
    """The setting's checkpoints (see the module docstring); ``counts``: label counts every
    algorithm reached; ``random_mean``: random's mean accuracy at each count; ``rule``: "authors"
    (stop before the first count past 99% of random's final accuracy; the first count n0 always
    stays) or "inclusive" (that count is the last checkpoint)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    if not counts:
        return []
    final = random_mean[max(counts)]
    out, k = [], 0
    while True:
        c = initial + (0 if k == 0 else b * 2 ** (k - 1))
        if c > max(counts):
            break
        if c in counts:
            past = random_mean.get(c, -math.inf) > 0.99 * final
            if past and rule == "authors" and k > 0:
                break
            out.append(c)
            if past and rule == "inclusive":
                break
        k += 1
    return out


def paired_winner(acc_a: np.ndarray, acc_b: np.ndarray, alpha: float = 0.05) -> Optional[str]:
    """'a' or 'b' when the two-sided one-sample t-test of the paired differences has p < alpha
    (identical nonzero differences count as significant), else None."""
    diff = np.asarray(acc_a, float) - np.asarray(acc_b, float)
    if paired_p(diff) < alpha:
        return "a" if diff.mean() > 0 else "b"
    return None


def setting_tests(curves: dict[str, dict[int, dict[int, float]]], initial: int, b: int,
                  baseline: str = "random", rule: str = "authors") -> tuple[list[str], list[int], list[tuple[int, int, int, float, float]]]:
    """A setting's paired tests: (algorithms, checkpoints, [(checkpoint, i, j, p, mean of
    accuracy i - accuracy j)]) for every checkpoint and pair i < j, over the repeats both ran.
    ``curves[algorithm][seed][count]`` = test accuracy."""
    names = sorted(curves)
    if baseline not in curves:
        return names, [], []
    counts = sorted(set.intersection(*[set(c) for runs in curves.values() for c in runs.values()]))
    random_mean = {c: float(np.mean([run[c] for run in curves[baseline].values()])) for c in counts}
    points = checkpoints(initial, b, counts, random_mean, rule)
    tests = []
    for c in points:
        for i, a in enumerate(names):
            for j in range(i + 1, len(names)):
                seeds = sorted(set(curves[a]) & set(curves[names[j]]))
                diff = np.array([curves[a][s][c] - curves[names[j]][s][c] for s in seeds])
                tests.append((c, i, j, paired_p(diff), float(diff.mean()) if len(diff) else 0.0))
    return names, points, tests


def setting_penalty(curves: dict[str, dict[int, dict[int, float]]], initial: int, b: int,
                    baseline: str = "random", correction: Optional[str] = None,
                    alpha: float = 0.05, rule: str = "authors") -> tuple[list[str], np.ndarray, list[int]]:
    """One setting's penalty matrix (the module docstring's rule; ``correction``: None, the
    paper's, or "holm"). Returns (algorithms, P, checkpoints)."""
    if correction not in (None, "holm"):
        raise ValueError(f"correction must be None or 'holm'; got {correction!r}")
    names, points, tests = setting_tests(curves, initial, b, baseline, rule)
    P = np.zeros((len(names), len(names)))
    ps = [t[3] for t in tests]
    if correction == "holm":
        ps = holm_adjusted(ps)
    for (c, i, j, _, mean), p in zip(tests, ps):
        if p < alpha:
            winner, loser = (i, j) if mean > 0 else (j, i)
            P[winner, loser] += 1 / len(points)
    return names, P, points


def column_means(P: np.ndarray) -> np.ndarray:
    """Column sums over the number of algorithms (diagonal included): lower is better."""
    return P.sum(0) / P.shape[0]


def normalised_errors(curves: dict[str, dict[int, dict[int, float]]], points: list[int],
                      baseline: str = "random") -> dict[str, list[tuple[float, float]]]:
    """Per algorithm, (error / random's error, weight 1 / len(points)) at each checkpoint (mean over seeds)."""
    out: dict[str, list[tuple[float, float]]] = {}
    if not points or baseline not in curves:
        return out
    base = {c: 1 - np.mean([run[c] for run in curves[baseline].values()]) for c in points}
    for name, runs in curves.items():
        out[name] = [(float((1 - np.mean([run[c] for run in runs.values()])) / base[c]), 1 / len(points))
                     for c in points if base[c] > 0]
    return out


def weighted_cdf(values: list[tuple[float, float]], grid: np.ndarray) -> np.ndarray:
    """The weighted share of values <= each grid point."""
    if not values:
        return np.zeros_like(grid)
    v = np.array([x for x, _ in values])
    w = np.array([w for _, w in values])
    return np.array([(w * (v <= g)).sum() / w.sum() for g in grid])


# The BADGE paper's findings (REFERENCE.md 4b), checked against a study's settings.
DIVERSITY, UNCERTAINTY = "coreset", "margin"


def _ranked(names: list[str], means: np.ndarray, shown: dict) -> str:
    return ", ".join(f"{shown.get(n, n)} {m:.2f}" for m, n in sorted(zip(means.tolist(), names)))


def _lowest(names: list[str], means: np.ndarray, group: set[str], shown: dict) -> str:
    """"holds" when every algorithm in ``group`` has a lower column mean than every one outside
    it, "a tie with ..." when the best outside equals the group's highest, else "does not hold"."""
    inside = [m for n, m in zip(names, means) if n in group]
    outside = {n: m for n, m in zip(names, means) if n not in group}
    if len(inside) != len(group):
        return "cannot be judged (an algorithm is missing)"
    if not outside or max(inside) < min(outside.values()) - 1e-12:
        return "holds"
    tied = [shown.get(n, n) for n, m in outside.items() if abs(m - max(inside)) <= 1e-12]
    if tied and min(outside.values()) >= max(inside) - 1e-12:
        return "a tie with " + ", ".join(tied)
    return "does not hold"


def paper_findings(settings: dict[tuple[str, int], tuple[list[str], np.ndarray, list[int], dict]],
                   tabular: tuple[str, ...] = ("letter",), shown: Optional[dict] = None) -> list[tuple[str, str, str]]:
    """(finding, what was measured, verdict) for each of the paper's findings. ``settings[(data
    set, b)]`` = (algorithms, P, checkpoints, curves) with one algorithm order for all; P by
    whichever rule the caller chose (the paper's or Holm's). Verdicts: "holds", "does not hold",
    or "cannot be judged" when no setting of the kind is there. ``shown``: display names."""
    shown = shown or {}
    out: list[tuple[str, str, str]] = []
    if not settings:
        return [("every finding", "no setting has finished", "cannot be judged")]
    names = next(iter(settings.values()))[0]

    def means(keys) -> np.ndarray:
        return column_means(sum(settings[k][1] for k in keys))

    def verdict(ok: bool) -> str:
        return "holds" if ok else "does not hold"

    every = list(settings)
    m = means(every)
    out.append(("BADGE has the best (lowest) overall column mean",
                f"{len(every)} setting(s): {_ranked(names, m, shown)}", _lowest(names, m, {"badge"}, shown)))
    small = [k for k in every if k[1] in (100, 1_000)]
    if small:
        m = means(small)
        out.append(("With b = 100 or 1,000 (and with the MLP), BADGE and Marg are best",
                    f"{len(small)} setting(s): {_ranked(names, m, shown)}", _lowest(names, m, {"badge", "margin"}, shown)))
    else:
        out.append(("With b = 100 or 1,000 (and with the MLP), BADGE and Marg are best", "no setting at b = 100 or 1,000", "cannot be judged"))
    large = [k for k in every if k[1] == 10_000]
    if large:
        m = means(large)
        best = _lowest(names, m, {"badge", "albl", "coreset"}, shown)
        marg_large = float(m[names.index("margin")])
        text = f"{len(large)} setting(s): {_ranked(names, m, shown)}"
        degrades = None
        if small:
            # per setting: the summed matrices cover different numbers of settings
            marg_small = float(means(small)[names.index("margin")]) / len(small)
            marg_large = marg_large / len(large)
            degrades = marg_large > marg_small
            text += f"; Marg's column mean per setting {marg_small:.3f} at b = 100/1,000, {marg_large:.3f} at b = 10,000"
        if degrades is False and best == "holds":
            best = "does not hold (Marg does not degrade)"
        out.append(("At b = 10,000 Marg degrades and BADGE, ALBL and Coreset are best", text,
                    best + ("" if degrades is not None else " (Marg's degradation: no smaller b to compare)")))
    else:
        out.append(("At b = 10,000 Marg degrades and BADGE, ALBL and Coreset are best", "no setting at b = 10,000", "cannot be judged"))
    tab = [k for k in every if k[0] in tabular]
    if tab:
        r, c = names.index("random"), names.index(DIVERSITY)
        worse = [k for k in tab if settings[k][1][r, c] > settings[k][1][c, r]]
        better = [k for k in tab if settings[k][1][c, r] > settings[k][1][r, c]]
        text = (f"Rand beats Coreset on more checkpoints than the reverse in {len(worse)} of {len(tab)} tabular setting(s)"
                + (f" ({', '.join(f'{d} b={b}' for d, b in worse)})" if worse else "")
                + f", Coreset beats Rand so in {len(better)}")
        if 2 * len(worse) >= len(tab):
            found = "holds"
        else:
            found = "a tie (not separated)" if not better else "does not hold"
        out.append(("Coreset is often worse than Rand on OpenML data with the MLP", text, found))
    else:
        out.append(("Coreset is often worse than Rand on OpenML data with the MLP", "no tabular setting", "cannot be judged"))
    # Early rounds favour diversity (Coreset), later rounds uncertainty (Marg); BADGE tracks the
    # better of the two: at each setting's first checkpoint after the initial labels and at its last.
    shifts, tracked, judged = 0, 0, 0
    for k in every:
        _, _, points, curves = settings[k]
        if len(points) < 3:
            continue  # needs an early and a later checkpoint besides the shared start
        judged += 1
        mean = {n: {c: float(np.mean([run[c] for run in curves[n].values()])) for c in (points[1], points[-1])} for n in curves}
        early, late = points[1], points[-1]
        shifts += mean[DIVERSITY][early] >= mean[UNCERTAINTY][early] and mean[UNCERTAINTY][late] >= mean[DIVERSITY][late]
        # closer to the better of the two than to the worse: at least their average
        tracked += all(mean["badge"][c] >= (mean[DIVERSITY][c] + mean[UNCERTAINTY][c]) / 2 for c in (early, late))
    if judged:
        out.append(("Early rounds favour diversity, later rounds uncertainty; BADGE tracks whichever wins",
                    f"Coreset >= Marg at the first checkpoint after the start and Marg >= Coreset at the last in {shifts} of "
                    f"{judged} setting(s) with 3 or more checkpoints; BADGE closer to the better of the two than to the worse at both in {tracked} of {judged}",
                    verdict(2 * shifts > judged) + "; BADGE tracking: " + verdict(2 * tracked > judged)))
    else:
        out.append(("Early rounds favour diversity, later rounds uncertainty; BADGE tracks whichever wins",
                    "no setting with 3 or more checkpoints", "cannot be judged"))
    return out
