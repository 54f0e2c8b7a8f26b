"""The ML-backend protocol's logic over a batchal labelling project (no web framework here)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from batchal.integrations.label_studio.client import LabelStudioClient
from batchal.integrations.label_studio.config import ProtocolError, choices_of

#: Annotators recorded for Label Studio users are named ``label-studio:<user>``.
ANNOTATOR_PREFIX = "label-studio:"

#: Seconds between the first /setup and the first ranking refresh (Label Studio saves the connection in between).
SETUP_SETTLE_SECONDS = 2.0



class Backend:
    """The protocol's logic over a :class:`batchal.labelling.Project` (no web framework here)."""

    def __init__(self, project, auto_next: bool = True, client: Optional[LabelStudioClient] = None,
                 webhook_headers: Optional[dict[str, str]] = None):
        """webhook_headers: what Label Studio's webhook to this backend must send (the basic auth
        header): with a client, the backend sets them on the project's webhooks itself."""
        self.project = project
        self.webhook_headers = webhook_headers
        self.auto_next = auto_next
        self.client = client
        self.ls_project: Optional[int] = None  # Label Studio's project id, from /setup
        self.last_refresh: Optional[str] = None  # what the last ranking refresh did (shown by /health)
        self._refreshing = threading.Lock()
        self._ids = {path: item for item, path in project.store.item_paths().items()}
        self._names: Optional[tuple[str, str]] = None  # (from_name, to_name) once /setup has been called
        self._lock = threading.Lock()
        self._annotations_file = Path(project.dir) / "label-studio-annotations.json"
        self._annotations: dict[str, list] = self._read_annotations()
        self.ignored_tasks = 0  # tasks seen without a known data.batchal_id

    # --- bookkeeping ---
    def _read_annotations(self) -> dict[str, list]:
        try:
            return json.loads(self._annotations_file.read_text())
        except FileNotFoundError:
            return {}

    def _remember(self, annotation_id, item: int, annotator: str) -> None:
        self._annotations[str(annotation_id)] = [item, annotator]
        tmp = self._annotations_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._annotations))
        os.replace(tmp, self._annotations_file)  # atomic: a crash leaves the old map or the new one

    def item_of(self, task: Any) -> Optional[int]:
        data = task.get("data") if isinstance(task, dict) else None
        key = data.get("batchal_id") if isinstance(data, dict) else None
        return self._ids.get(key) if isinstance(key, str) else None

    def model_version(self) -> str:
        batch = self.project.store.current_batch()
        return f"batchal-{self.project.meta['strategy']}-batch-{batch[0] if batch else 0}"

    # --- the protocol ---
    def health(self) -> dict:
        return {"status": "UP", "model_class": "batchal", "state": self.project.state, "error": self.project.error,
                "model_version": self.model_version(), "ignored_tasks": self.ignored_tasks, "last_refresh": self.last_refresh}

    def setup(self, body: dict) -> dict:
        from_name, to_name, values = choices_of(body.get("schema") if isinstance(body, dict) else None)
        classes = self.project.classes
        missing, extra = [c for c in classes if c not in values], [v for v in values if v not in classes]
        if missing or extra:
            raise ProtocolError("the label config's choices must be the project's classes: "
                                + "; ".join(p for p in (f"missing {', '.join(missing)}" if missing else "",
                                                        f"not a class: {', '.join(extra)}" if extra else "") if p))
        self._names = (from_name, to_name)
        self.project.current_batch()  # the first (diversity) batch exists before the first prediction
        first = self.ls_project is None
        try:
            self.ls_project = int(str(body.get("project", "")).split(".")[0])
        except ValueError:
            pass
        if first and self.ls_project is not None:
            # Label Studio saves the connection after this answer: rank a moment later.
            self._in_background(lambda: (time.sleep(SETUP_SETTLE_SECONDS), self.refresh_ranking()))
        return {"model_version": self.model_version()}

    def _in_background(self, work) -> None:
        if self.client is not None:
            threading.Thread(target=work, daemon=True).start()

    def refresh_ranking(self) -> None:
        """Push the current batch's ranking into Label Studio (see the module docstring)."""
        if self.client is None or self.ls_project is None:
            return
        with self._refreshing:
            version = self.model_version()
            try:
                if self.webhook_headers:  # before the ranking: annotations then reach the backend authenticated
                    self.client.secure_webhooks(self.ls_project, self.webhook_headers)
                done = self.client.refresh_ranking(self.ls_project, version)
                self.last_refresh = f"{version}: {done.get('detail', done) if isinstance(done, dict) else done}"
            except (OSError, ValueError, KeyError) as exc:  # Label Studio down or the key refused: shown by /health
                self.last_refresh = f"{version}: failed ({exc})"
                print(f"batchal: could not refresh Label Studio's ranking: {exc}", file=sys.stderr, flush=True)

    def next_batch(self) -> str:
        """Retrain and select in the background; then refresh Label Studio's ranking."""
        state = self.project.request_next()

        def after():
            self.project.wait()
            if self.project.error is None:
                self.refresh_ranking()

        if state != "done":
            self._in_background(after)
        return state

    def scores(self, predictions: Optional[dict] = None) -> dict[int, float]:
        """Every item's ranking score (see the module docstring); ``predictions``: the store's, if already read."""
        store = self.project.store
        labels, flagged = store.current_labels(), store.flagged()
        out = {item: 0.0 for item in store.item_paths()}
        for item, (_, p) in (predictions if predictions is not None else store.predictions()).items():
            if item not in labels and item not in flagged:
                out[item] = max(0.0, min(1.0 - float(p), 0.999))
        batch = store.current_batch()
        open_items = [i for i in (batch[1] if batch else []) if i not in labels and i not in flagged]
        for rank, item in enumerate(open_items):
            out[item] = 1.0 + (len(open_items) - rank) / len(open_items)
        return out

    def predict(self, body: dict) -> dict:
        tasks = body.get("tasks") if isinstance(body, dict) else None
        if not isinstance(tasks, list):
            raise ProtocolError("predict needs a list of tasks")
        if self._names is None and isinstance(body.get("label_config"), str):
            self.setup({"schema": body["label_config"]})
        from_name, to_name = self._names or ("label", "image")
        predictions = self.project.store.predictions()
        version, scores = self.model_version(), self.scores(predictions)
        results = []
        for task in tasks:
            item = self.item_of(task)
            if item is None:
                self.ignored_tasks += 1
                results.append({"result": [], "score": 0.0, "model_version": version})
                continue
            suggestion = predictions.get(item)
            region = [{"from_name": from_name, "to_name": to_name, "type": "choices",
                       "value": {"choices": [suggestion[0]]}}] if suggestion else []
            results.append({"result": region, "score": scores.get(item, 0.0), "model_version": version})
        return {"results": results, "model_version": version}

    def webhook(self, body: dict) -> dict:
        action = body.get("action") if isinstance(body, dict) else None
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"):
            annotations, tasks = body.get("annotation"), body.get("task")
            pairs = zip(annotations, tasks) if isinstance(annotations, list) and isinstance(tasks, list) else [(annotations, tasks)]
            done = [self._annotation(a, t) for a, t in pairs]
            self._maybe_next()
            return {"action": action, "recorded": sum(1 for d in done if d)}
        if action == "ANNOTATIONS_DELETED":
            withdrawn = 0
            for entry in body.get("annotations") or []:
                known = self._annotations.get(str(entry.get("id"))) if isinstance(entry, dict) else None
                if known:
                    self.project.withdraw_label(int(known[0]), known[1])
                    withdrawn += 1
            return {"action": action, "withdrawn": withdrawn}
        if action == "START_TRAINING":
            return {"action": action, "state": self.next_batch()}
        return {"action": action, "ignored": True}  # Label Studio sends every action to the backend's webhook

    def _annotation(self, annotation: Any, task: Any) -> bool:
        if not isinstance(annotation, dict):
            return False
        item = self.item_of(task)
        if item is None:
            self.ignored_tasks += 1
            return False
        user = annotation.get("completed_by")
        user = user.get("email") or user.get("id") if isinstance(user, dict) else user
        annotator = f"{ANNOTATOR_PREFIX}{user}"
        if annotation.get("was_cancelled"):
            self.project.flag(item, "unsure", "skipped in Label Studio", annotator)
            return True
        label = self._choice(annotation.get("result"))
        if label is None:
            return False
        with self._lock:
            self.project.add_label(item, label, annotator)
            if annotation.get("id") is not None:
                self._remember(annotation["id"], item, annotator)
        return True

    def _choice(self, result: Any) -> Optional[str]:
        for region in result or []:
            if not isinstance(region, dict) or region.get("type") != "choices":
                continue
            if self._names and region.get("from_name") not in (None, self._names[0]):
                continue
            chosen = (region.get("value") or {}).get("choices") or []
            if len(chosen) == 1 and chosen[0] in self.project.classes:
                return chosen[0]
            raise ProtocolError(f"the annotation's choice {chosen!r} is not one class of {', '.join(self.project.classes)}")
        return None

    def _maybe_next(self) -> None:
        if not self.auto_next:
            return
        store = self.project.store
        batch = store.current_batch()
        if batch is None:
            return
        taken = set(store.current_labels()) | set(store.flagged())
        if all(item in taken for item in batch[1]):
            self.next_batch()

