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
fires only when an exact 95% upper bound on that gain is below the half-width of the current
estimate's interval (the gain, if any, is smaller than what the estimate can resolve) *and*
the model is clearly above chance (the estimate's lower bound above the chance level, the
larger of 1/C and the most frequent class's share of the labels): a model that has learnt
nothing is not "done". The bound: the gain is P(now right, before wrong) - P(now wrong, before
right), at most the first, whose one-sided 95% Clopper-Pearson upper bound from the paired
items is exact and valid with no discordant pair at all (1 - 0.05^(1/n) then).

Against random, while labelling. Would random items have done as well? The audit items are a
uniformly random sample of the pool, labelled as the batches go, so they answer it at no extra
label: the labelled audit items are split into ``VERSUS_FOLDS`` folds; for each fold, one model
is trained on the other folds' m random items and one on the strategy's first m labelled items
(batch order, with the same training), and both are scored on the fold's items, which neither
saw. Every audit item is then a paired comparison at equal label counts. The gain is
P(chosen right, random wrong) - P(chosen wrong, random right); its 95% interval combines the two
shares' exact 97.5% Clopper-Pearson intervals (lower: the first's lower bound minus the
second's upper bound), so it is valid with few items and with no discordant pair. The status
says the chosen batches are ahead (or behind) only when the interval excludes 0, and otherwise
that there is not yet enough evidence. It is made again once ``VERSUS_NEW_ITEMS`` more audit items
are labelled (every batch or two at the defaults).

The chance warning. When at least ``CHANCE_MIN_ITEMS`` audit items have been labelled and the
estimate's 95% interval still reaches down to the chance level, the status warns that the model
is not (yet) shown to beat chance: random or inconsistent labels, or a wrong class list, look
like this.
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


def clopper_pearson_upper(k: int, n: int, alpha: float = 0.05) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound for a proportion with k successes in n trials."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(1 - alpha, k + 1, n - k))


def paired_gain(now: dict[int, int], before: dict[int, int]) -> Optional[tuple[int, float, float]]:
    """(n, mean gain, exact 95% upper bound) of now - before on the items both were scored on
    (module docstring: the gain is at most the share of items now right and before wrong)."""
    common = sorted(set(now) & set(before))
    n = len(common)
    if n < 2:
        return None
    gained = sum(1 for i in common if now[i] and not before[i])
    lost = sum(1 for i in common if before[i] and not now[i])
    return n, (gained - lost) / n, clopper_pearson_upper(gained, n)


#: Folds of the audit items in the comparison with random; labelled audit items it waits for.
VERSUS_FOLDS = 5
VERSUS_MIN_ITEMS = 10
#: New labelled audit items before the comparison is made again (each costs 2 x VERSUS_FOLDS small trainings).
VERSUS_NEW_ITEMS = 5


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided (1 - alpha) Clopper-Pearson interval for a proportion with k successes in n trials."""
    from scipy.stats import beta

    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k >= n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def paired_difference(a: list[int], b: list[int]) -> dict:
    """a - b on paired right (1) / wrong (0) outcomes: {n, a, b, gain, low, high}, the 95% interval
    combining the discordant shares' exact 97.5% intervals (module docstring)."""
    n = len(a)
    if n == 0 or len(b) != n:
        raise ValueError(f"paired_difference needs two equally long, non-empty outcome lists, got {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    a_low, a_high = clopper_pearson(only_a, n, 0.025)
    b_low, b_high = clopper_pearson(only_b, n, 0.025)
    return {"n": n, "a": sum(a) / n, "b": sum(b) / n, "gain": (only_a - only_b) / n, "low": a_low - b_high, "high": a_high - b_low}


def versus_random_text(result: Optional[dict], labelled_random: int, min_items: int = VERSUS_MIN_ITEMS) -> str:
    """What the status says of the comparison with random (``Project.versus_random``)."""
    if result is None:
        return (f"Against random: not enough random items labelled yet ({labelled_random} of {min_items}) to compare the chosen "
                "batches with random ones.")
    at = (f"with {result['labels']} labels, a model on the strategy's first labels scored {result['a'] * 100:.0f}% on "
          f"{result['n']} held-out random items, one on as many random items {result['b'] * 100:.0f}% "
          f"(difference {result['gain'] * 100:+.0f} points, 95% interval {result['low'] * 100:+.0f} to {result['high'] * 100:+.0f})")
    if result["low"] > 0:
        return f"Against random: the chosen batches are doing better than random items would have: {at}."
    if result["high"] < 0:
        return f"Against random: the chosen batches are doing worse than random items would have: {at}."
    return f"Against random: not yet enough evidence either way: {at}."


#: Audit items the chance warning waits for.
CHANCE_MIN_ITEMS = 20


def chance_level(num_classes: int, label_counts: dict[str, int]) -> float:
    """What a model that learnt nothing scores: the larger of 1/C and the most frequent class's share of the labels."""
    total = sum(label_counts.values())
    majority = max(label_counts.values()) / total if total else 0.0
    return max(1.0 / max(num_classes, 1), majority)


def _latest(history: list[dict]) -> Optional[dict]:
    rows = [r for r in history if r.get("low") is not None]
    return rows[-1] if rows else None


def above_chance(history: list[dict], chance: float) -> bool:
    """The latest estimate's 95% lower bound is above the chance level."""
    row = _latest(history)
    return row is not None and row["low"] > chance


def chance_warning(history: list[dict], chance: float, min_items: int = CHANCE_MIN_ITEMS) -> Optional[str]:
    """The warning's text when the model is not shown to beat chance after ``min_items`` audit items, else None."""
    row = _latest(history)
    if row is None or (row.get("held_out") or 0) < min_items or row["low"] > chance:
        return None
    return (f"The model is not shown to beat chance: {row['accuracy'] * 100:.0f}% on {row['held_out']} random items "
            f"(95% interval from {row['low'] * 100:.0f}%) against {chance * 100:.0f}% for always answering the most common "
            "class. Random or inconsistent labels, or a wrong class list, look like this.")


def stop_hint(history: list[dict], window: int = 3, min_items: int = 20, chance: float = 0.0) -> Optional[str]:
    """The hint's text when the gain over the last ``window`` batches is below what the
    estimate resolves and the model is clearly above ``chance`` (see the module docstring),
    else None. ``history``: the accuracy rows, oldest first, each with ``per_item``, ``low`` and ``high``."""
    rows = [r for r in history if r.get("per_item")]
    if len(rows) <= window or not above_chance(history, chance):
        return None
    now, before = rows[-1], rows[-1 - window]
    compared = paired_gain(now["per_item"], before["per_item"])
    if compared is None or compared[0] < min_items or now.get("low") is None:
        return None
    n, mean, upper = compared
    half_width = (now["high"] - now["low"]) / 2
    if upper < half_width:
        return (f"the accuracy gain over the last {window} batches is at most {upper * 100:.1f} points (exact 95% bound, {n} random "
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


def reliability(annotator_labels: dict[int, dict[str, tuple[str, int]]]) -> dict[str, dict]:
    """Each annotator's agreement with the consensus of the *others*: on every item they labelled
    where the other annotators' vote is decided (``store.vote`` without their own label), the share
    where their label equals it. Leaving oneself out keeps an annotator from agreeing with their
    own vote; with few shared items per annotator this is steadier than a Dawid-Skene fit, which
    needs many overlapping items to estimate a confusion matrix per annotator.
    {annotator: {"items": n, "agreement": share or None}}."""
    from batchal.labelling.store import vote

    out: dict[str, dict] = {}
    for given in annotator_labels.values():
        if len(given) < 2:
            continue
        for name, (label, _) in given.items():
            others = vote([other for who, (other, _) in given.items() if who != name])
            if others is None:
                continue
            entry = out.setdefault(name or "(owner)", {"items": 0, "agree": 0})
            entry["items"] += 1
            entry["agree"] += int(label == others)
    return {name: {"items": e["items"], "agreement": e["agree"] / e["items"] if e["items"] else None} for name, e in sorted(out.items())}


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
        "reliability": reliability(annotator_labels),
    }
