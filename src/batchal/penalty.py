"""BADGE's summary of many settings, as its code computes it (JordanAsh/badge,
scripts/agg_results.py; REFERENCE.md section 4b).

Checkpoints of a setting (initial size n0, batch size b): n0, n0 + b, n0 + 2b, n0 + 4b, ...
(doubling), up to the first one where random's mean accuracy exceeds 99% of its final
accuracy (its mean at the last label count all algorithms share), and only counts every
algorithm reached. At each checkpoint and for each pair (i, j), a two-sided one-sample t-test
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


def checkpoints(initial: int, b: int, counts: list[int], random_mean: dict[int, float]) -> list[int]:
    """The setting's checkpoints (see the module docstring); ``counts``: label counts every
    algorithm reached; ``random_mean``: random's mean accuracy at each count."""
    if not counts:
        return []
    final = random_mean[max(counts)]
    out, k = [], 0
    while True:
        c = initial + (0 if k == 0 else b * 2 ** (k - 1))
        if c > max(counts):
            break
        if c in counts:
            out.append(c)
            if random_mean.get(c, -math.inf) > 0.99 * final:
                break
        k += 1
    return out


def paired_winner(acc_a: np.ndarray, acc_b: np.ndarray, alpha: float = 0.05) -> Optional[str]:
    """'a' or 'b' when the two-sided one-sample t-test of the paired differences has p < alpha
    (identical nonzero differences count as significant), else None."""
    from scipy import stats

    diff = np.asarray(acc_a, float) - np.asarray(acc_b, float)
    if len(diff) < 2 or np.all(diff == 0):
        return None
    if np.all(diff == diff[0]):
        return "a" if diff[0] > 0 else "b"
    p = stats.ttest_1samp(diff, 0.0).pvalue
    if p < alpha:
        return "a" if diff.mean() > 0 else "b"
    return None


def setting_penalty(curves: dict[str, dict[int, dict[int, float]]], initial: int, b: int,
                    baseline: str = "random") -> tuple[list[str], np.ndarray, list[int]]:
    """One setting's penalty matrix. ``curves[algorithm][seed][count]`` = test accuracy.
    Returns (algorithms, P, checkpoints)."""
    names = sorted(curves)
    P = np.zeros((len(names), len(names)))
    if baseline not in curves:
        return names, P, []
    counts = sorted(set.intersection(*[set(c) for runs in curves.values() for c in runs.values()]))
    random_mean = {c: float(np.mean([run[c] for run in curves[baseline].values()])) for c in counts}
    points = checkpoints(initial, b, counts, random_mean)
    for c in points:
        for i, a in enumerate(names):
            for j in range(i + 1, len(names)):
                other = names[j]
                seeds = sorted(set(curves[a]) & set(curves[other]))
                won = paired_winner([curves[a][s][c] for s in seeds], [curves[other][s][c] for s in seeds])
                if won == "a":
                    P[i, j] += 1 / len(points)
                elif won == "b":
                    P[j, i] += 1 / len(points)
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
