"""Paired tests and Holm's correction, shared by the studies' summaries (the BADGE penalty
matrix, the BatchBALD paired tests, the regression study)."""

from __future__ import annotations

import numpy as np


def paired_p(diff) -> float:
    """Two-sided one-sample t-test p-value of paired differences against 0. All-zero differences
    give 1.0, identical nonzero ones 0.0 (no spread to test against); fewer than 2 give 1.0."""
    from scipy import stats

    d = np.asarray(diff, float)
    if len(d) < 2 or np.all(d == 0):
        return 1.0
    if np.all(d == d[0]):
        return 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def holm_adjusted(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: p_(j) * (m - j), made monotone,
    capped at 1. Holm's rule keeps a test at level alpha when its adjusted p is at most alpha
    (p_(j) <= alpha / (m - j) for it and every smaller p)."""
    p = [float(x) for x in pvalues]
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, p[i] * (m - rank)))
        out[i] = running
    return out
