"""How good the model and the labels are, honestly: the accuracy estimate with its interval,
when to suggest stopping, and agreement between annotators.

The estimate. Items the strategy picks are the ones the model finds hardest, so accuracy on
them says little about accuracy on the rest; and items that early stopping chose a model on
overstate it. So every batch carries a few items drawn uniformly at random from the pool (the
*audit* items, ``AUDIT_FRACTION`` of the batch, at least one). They are labelled like the others
but never trained on while the estimate is made (nor used for early stopping, which splits
its own validation items off the training labels), so the model's accuracy on them is an
unbiased estimate of its accuracy on the unlabelled items, up to the drift of the pool as
items leave it. It is shown with its count and a 95% Wilson interval, which is honest even
for a handful of items. The exported model is retrained on every label.

The stop hint. Successive estimates on a few items are noisy, so a plateau of point estimates
says nothing. The hint compares the current model with the one ``window`` batches earlier on
the *same* audit items (a paired comparison: the noise of which items were drawn cancels) and
fires only when the upper end of the 95% interval of that gain is below the half-width of the
current estimate's interval: the gain, if any, is smaller than what the estimate can resolve.
"""

from __future__ import annotations

import math
from typing import Optional

from batchal.stopping import cohen_kappa

#: Audit items per strategy pick (at least one per batch).
AUDIT_FRACTION = 0.2
Z95 = 1.959963984540054


def audit_count(batch_size: int, fraction: float = AUDIT_FRACTION) -> int:
    return max(1, math.ceil(batch_size * fraction))


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (0, 1 when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_gain(now: dict[int, int], before: dict[int, int], z: float = Z95) -> Optional[tuple[int, float, float]]:
    """(n, mean gain, upper 95% bound) of now - before on the items both were scored on; the
    bound uses the paired differences' standard error, with a floor of one discordant pair
    (so that n identical results do not claim a zero-width interval)."""
    common = sorted(set(now) & set(before))
    n = len(common)
    if n < 2:
        return None
    diffs = [now[i] - before[i] for i in common]
    mean = sum(diffs) / n
    var = max(sum((d - mean) ** 2 for d in diffs) / (n - 1), 1 / n)
    return n, mean, mean + z * math.sqrt(var / n)


def stop_hint(history: list[dict], window: int = 3, min_items: int = 20) -> Optional[str]:
    """The hint's text when the gain over the last ``window`` batches is below what the
    estimate resolves (see the module docstring), else None. ``history``: the accuracy rows,
    oldest first, each with ``per_item``, ``low`` and ``high``."""
    rows = [r for r in history if r.get("per_item")]
    if len(rows) <= window:
        return None
    now, before = rows[-1], rows[-1 - window]
    compared = paired_gain(now["per_item"], before["per_item"])
    if compared is None or compared[0] < min_items or now.get("low") is None:
        return None
    n, mean, upper = compared
    half_width = (now["high"] - now["low"]) / 2
    if upper < half_width:
        return (f"the accuracy gain over the last {window} batches is at most {upper * 100:.1f} points (95% bound, {n} random "
                f"items), below the estimate's own precision of ±{half_width * 100:.1f} points")
    return None


def fleiss_kappa(ratings: list[list[str]]) -> Optional[float]:
    """Fleiss' kappa over items each labelled by at least two annotators (counts may differ per
    item: the per-item agreement uses its own count). None: fewer than two such items."""
    items = [r for r in ratings if len(r) >= 2]
    if len(items) < 2:
        return None
    labels = sorted({c for r in items for c in r})
    p_items, totals = [], {c: 0 for c in labels}
    for r in items:
        m = len(r)
        counts = [r.count(c) for c in labels]
        p_items.append((sum(k * k for k in counts) - m) / (m * (m - 1)))
        for c, k in zip(labels, counts):
            totals[c] += k
    grand = sum(totals.values())
    p_bar = sum(p_items) / len(p_items)
    p_e = sum((t / grand) ** 2 for t in totals.values())
    return 1.0 if p_e == 1 else (p_bar - p_e) / (1 - p_e)


def agreement(annotator_labels: dict[int, dict[str, tuple[str, int]]]) -> dict:
    """Agreement on items labelled by two or more annotators: how many, the share where all
    agree, Fleiss' kappa, and Cohen's kappa for each pair of annotators on the items both labelled."""
    multi = {i: {a: label for a, (label, _) in given.items()} for i, given in annotator_labels.items() if len(given) >= 2}
    pairs: dict[str, Optional[float]] = {}
    names = sorted({a for given in multi.values() for a in given})
    for x in range(len(names)):
        for y in range(x + 1, len(names)):
            both = [g for g in multi.values() if names[x] in g and names[y] in g]
            kappa = cohen_kappa([g[names[x]] for g in both], [g[names[y]] for g in both])
            if both:
                pairs[f"{names[x] or '(owner)'} / {names[y] or '(owner)'}"] = kappa
    return {
        "items": len(multi),
        "all_agree": sum(len(set(g.values())) == 1 for g in multi.values()),
        "fleiss_kappa": fleiss_kappa([list(g.values()) for g in multi.values()]),
        "cohen_kappa": pairs,
        "disagreements": sorted(i for i, g in multi.items() if len(set(g.values())) > 1),
    }
