"""``batchal label export``: every label of a project, as CSV (latest label per item) or JSON (with history)."""

from __future__ import annotations

import csv
import io
import json

from batchal.labelling.store import Store


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
        writer.writerow(["item_id", "path", "label", "annotator", "labelled_at", "times_labelled"])
        for item_id in sorted(i for i in latest if i in current):
            row = latest[item_id]
            writer.writerow([item_id, paths[item_id], row["label"], row["annotator"] or "", row["created_at"], len(by_item[item_id])])
        return out.getvalue()
    items = [{"id": i, "path": paths[i], "label": latest[i]["label"], "history": by_item[i]} for i in sorted(latest) if i in current]
    return json.dumps({"classes": store.meta()["classes"], "items": items}, indent=1) + "\n"


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
        writer.writerows(rows)
        return out.getvalue()
    items = [{"id": i, "path": path, "predicted": label, "probability": p} for i, path, label, p in rows]
    return json.dumps({"classes": store.meta()["classes"], "items": items}, indent=1) + "\n"
