"""``batchal label export``: every label of a project, as CSV (latest label per item) or JSON (with history)."""

from __future__ import annotations

import csv
import io
import json

from batchal.labelling.quality import agreement
from batchal.labelling.store import Store

#: A cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """A CSV cell a spreadsheet shows as text: text starting like a formula gets a leading '."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def export_labels(project_dir, fmt: str) -> str:
    if fmt not in ("csv", "json"):
        raise ValueError(f"--format must be csv or json, got {fmt!r}")
    store = Store(project_dir)
    paths = store.item_paths()
    history = store.label_history()
    latest: dict[int, dict] = {}
    by_item: dict[int, list[dict]] = {}
    current = store.current_labels()  # an item undone back to unlabelled is not exported
    for row in history:
        latest[row["item_id"]] = row
        by_item.setdefault(row["item_id"], []).append(
            {"label": row["label"], "annotator": row["annotator"], "created_at": row["created_at"]})
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["item_id", "path", "label", "annotator", "labelled_at", "times_labelled", "annotators", "flag"])
        given = store.annotator_labels()
        flags = store.flagged()
        for item_id in sorted(i for i in latest if i in current):
            row = latest[item_id]
            names = ";".join(f"{a or '(owner)'}={label}" for a, (label, _) in sorted(given.get(item_id, {}).items()))
            writer.writerow([safe_cell(v) for v in (item_id, paths[item_id], current[item_id], row["annotator"] or "", row["created_at"],
                                                    len(by_item[item_id]), names, flags.get(item_id, {}).get("kind", ""))])
        for item_id, votes in sorted(store.unresolved().items()):  # the annotators' votes tie: no training label yet
            names = ";".join(f"{a or '(owner)'}={label}" for a, (label, _) in sorted(given.get(item_id, {}).items()))
            writer.writerow([safe_cell(v) for v in (item_id, paths[item_id], "", "", "", len(by_item[item_id]), names, "unresolved")])
        for item_id in sorted(i for i in flags if i not in current):  # flagged, never labelled
            writer.writerow([safe_cell(v) for v in (item_id, paths[item_id], "", flags[item_id]["annotator"] or "", "", 0, "",
                                                    flags[item_id]["kind"])])
        return out.getvalue()
    unresolved = store.unresolved()
    items = [{"id": i, "path": paths[i], "label": current.get(i), "history": by_item[i], **({"unresolved": unresolved[i]} if i in unresolved else {})}
             for i in sorted(latest) if i in current or i in unresolved]
    flagged = [{"id": i, "path": paths[i], **f} for i, f in sorted(store.flagged().items())]
    return json.dumps({"classes": store.meta()["classes"], "items": items, "flagged": flagged,
                       "agreement": agreement(store.annotator_labels())}, indent=1) + "\n"


def export_predictions(project_dir, fmt: str) -> str:
    """The latest model's prediction (most probable class and its probability) for every item
    unlabelled when it was trained, as CSV or JSON."""
    if fmt not in ("csv", "json"):
        raise ValueError(f"--format must be csv or json, got {fmt!r}")
    store = Store(project_dir)
    paths = store.item_paths()
    labelled = store.current_labels()
    rows = [(i, paths[i], label, p) for i, (label, p) in store.predictions().items() if i not in labelled]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["item_id", "path", "predicted", "probability"])
        writer.writerows([[safe_cell(v) for v in row] for row in rows])
        return out.getvalue()
    items = [{"id": i, "path": path, "predicted": label, "probability": p} for i, path, label, p in rows]
    return json.dumps({"classes": store.meta()["classes"], "items": items}, indent=1) + "\n"
