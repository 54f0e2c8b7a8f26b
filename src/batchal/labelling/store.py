"""A labelling project's state in SQLite: items, every label ever given, batches, accuracy history.

Durability: the database runs in WAL mode with ``synchronous=FULL``, and every write commits
before the caller returns, so a label acknowledged to a client survives a kill of the server.
Labels are never overwritten: relabelling adds a row, and an item's label is its latest row.
One connection per thread; writes are serialised by SQLite (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id),
    label TEXT NOT NULL,
    annotator TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_item ON labels(item_id, id);
CREATE TABLE IF NOT EXISTS batches (id INTEGER PRIMARY KEY, strategy TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id INTEGER NOT NULL REFERENCES batches(id),
    position INTEGER NOT NULL,
    item_id INTEGER NOT NULL REFERENCES items(id),
    PRIMARY KEY (batch_id, position)
);
CREATE TABLE IF NOT EXISTS predictions (
    item_id INTEGER PRIMARY KEY REFERENCES items(id),
    label TEXT NOT NULL,
    probability REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS accuracy (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    labelled INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    held_out INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""

DB_NAME = "project.sqlite"

#: Columns added after the first release: (table, column, type). Older projects gain them on open.
_ADDED_COLUMNS = [
    ("labels", "undoes", "INTEGER"),            # the label row this row undoes (its label: the one before, '' for none)
    ("batch_items", "suggestion", "TEXT"),      # the model's most probable class when the batch was chosen
    ("batch_items", "probability", "REAL"),     # and its probability
    ("batch_items", "score", "REAL"),           # why it was chosen: its acquisition score
    ("batches", "information", "REAL"),         # the batch's score (BatchBALD: I(y_1..y_b; w); top-b: the sum)
    ("batches", "kappa", "REAL"),               # Cohen's kappa between this model's predictions and the last one's
]

#: The label of an item that an undo returned to "not labelled".
UNLABELLED = ""


class Store:
    def __init__(self, project_dir: Path):
        self.path = Path(project_dir) / DB_NAME
        if not self.path.exists():
            raise FileNotFoundError(f"{project_dir} is not a labelling project (no {DB_NAME}); create it with `batchal label init`")
        self._local = threading.local()
        with self.write() as con:  # projects from earlier versions gain the newer tables and columns
            _add_columns(con)
            con.execute("CREATE TABLE IF NOT EXISTS predictions (item_id INTEGER PRIMARY KEY REFERENCES items(id), "
                        "label TEXT NOT NULL, probability REAL NOT NULL)")

    @staticmethod
    def create(project_dir: Path, meta: dict[str, Any], item_paths: list[str]) -> "Store":
        project_dir = Path(project_dir)
        project_dir.mkdir(parents=True, exist_ok=True)
        path = project_dir / DB_NAME
        if path.exists():
            raise FileExistsError(f"{project_dir} already holds a labelling project")
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            _add_columns(con)
            with con:
                con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
                con.executemany("INSERT INTO items(path) VALUES (?)", [(p,) for p in item_paths])
        finally:
            con.close()
        return Store(project_dir)

    def add_labels(self, rows: list[tuple[int, str]], annotator: str) -> None:
        """Many labels in one transaction (an import)."""
        with self.write() as con:
            con.executemany("INSERT INTO labels(item_id, label, annotator, created_at) VALUES (?, ?, ?, ?)",
                            [(item, label, annotator, time.time()) for item, label in rows])

    @property
    def con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            self._local.con = con
        return con

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    # --- reads ---
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.con.execute("SELECT key, value FROM meta")}

    def item_count(self) -> int:
        return self.con.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def item_path(self, item_id: int) -> Optional[str]:
        row = self.con.execute("SELECT path FROM items WHERE id = ?", (item_id,)).fetchone()
        return row[0] if row else None

    def item_paths(self) -> dict[int, str]:
        return dict(self.con.execute("SELECT id, path FROM items ORDER BY id"))

    def current_labels(self) -> dict[int, str]:
        """The latest label of every labelled item (an item whose latest row is an undo to
        'not labelled' is not labelled)."""
        rows = self.con.execute(
            "SELECT item_id, label FROM labels WHERE id IN (SELECT MAX(id) FROM labels GROUP BY item_id) AND label != ? ORDER BY item_id",
            (UNLABELLED,),
        )
        return dict(rows)

    def label_history(self) -> list[dict]:
        rows = self.con.execute("SELECT id, item_id, label, annotator, created_at, undoes FROM labels ORDER BY id")
        return [dict(zip(("id", "item_id", "label", "annotator", "created_at", "undoes"), r)) for r in rows]

    def batch_details(self, batch_id: int) -> list[dict]:
        rows = self.con.execute("SELECT item_id, suggestion, probability, score FROM batch_items WHERE batch_id = ? ORDER BY position", (batch_id,))
        return [dict(zip(("id", "suggestion", "probability", "score"), r)) for r in rows]

    def batch_history(self) -> list[dict]:
        rows = self.con.execute("SELECT id, strategy, information, kappa, created_at FROM batches ORDER BY id")
        return [dict(zip(("id", "strategy", "information", "kappa", "created_at"), r)) for r in rows]

    def predictions(self) -> dict[int, tuple[str, float]]:
        return {i: (label, p) for i, label, p in self.con.execute("SELECT item_id, label, probability FROM predictions ORDER BY item_id")}

    def current_batch(self) -> Optional[tuple[int, list[int]]]:
        row = self.con.execute("SELECT MAX(id) FROM batches").fetchone()
        if row[0] is None:
            return None
        items = [r[0] for r in self.con.execute("SELECT item_id FROM batch_items WHERE batch_id = ? ORDER BY position", (row[0],))]
        return row[0], items

    def batch_count(self) -> int:
        return self.con.execute("SELECT COUNT(*) FROM batches").fetchone()[0]

    def accuracy_history(self) -> list[dict]:
        rows = self.con.execute("SELECT labelled, accuracy, held_out, created_at FROM accuracy ORDER BY id")
        return [dict(zip(("labelled", "accuracy", "held_out", "created_at"), r)) for r in rows]

    # --- writes ---
    def add_label(self, item_id: int, label: str, annotator: Optional[str]) -> int:
        with self.write() as con:
            cur = con.execute("INSERT INTO labels(item_id, label, annotator, created_at) VALUES (?, ?, ?, ?)",
                              (item_id, label, annotator, time.time()))
            return cur.lastrowid

    def add_batch(
        self,
        strategy: str,
        item_ids: list[int],
        accuracy: Optional[tuple[int, float, int]] = None,
        details: Optional[list[tuple[Optional[str], Optional[float], Optional[float]]]] = None,
        information: Optional[float] = None,
        predictions: Optional[list[tuple[int, str, float]]] = None,
        kappa: Optional[float] = None,
    ) -> int:
        """A new batch, and with it in the same transaction what the model that chose it said:
        its accuracy estimate (labelled, accuracy, held_out), each item's (suggestion,
        probability, score), the batch's information and the predictions for every item."""
        details = details or [(None, None, None)] * len(item_ids)
        with self.write() as con:
            if accuracy is not None:
                con.execute("INSERT INTO accuracy(labelled, accuracy, held_out, created_at) VALUES (?, ?, ?, ?)", (*accuracy, time.time()))
            if predictions is not None:
                con.execute("DELETE FROM predictions")
                con.executemany("INSERT INTO predictions(item_id, label, probability) VALUES (?, ?, ?)", predictions)
            batch_id = con.execute("INSERT INTO batches(strategy, created_at, information, kappa) VALUES (?, ?, ?, ?)",
                                   (strategy, time.time(), information, kappa)).lastrowid
            con.executemany("INSERT INTO batch_items(batch_id, position, item_id, suggestion, probability, score) VALUES (?, ?, ?, ?, ?, ?)",
                            [(batch_id, i, item, *d) for i, (item, d) in enumerate(zip(item_ids, details))])
            return batch_id

    def undo_last_label(self, annotator: Optional[str] = None) -> Optional[tuple[int, str, int]]:
        """Undo the latest label that is not an undo and not undone yet, by a new row holding the
        item's label from before it ('' when it had none); nothing is deleted. Returns
        (item_id, restored label, new row id), or None when there is nothing to undo."""
        with self.write() as con:
            row = con.execute(
                "SELECT id, item_id FROM labels WHERE undoes IS NULL AND id NOT IN "
                "(SELECT undoes FROM labels WHERE undoes IS NOT NULL) ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            target, item_id = row
            before = con.execute("SELECT label FROM labels WHERE item_id = ? AND id < ? ORDER BY id DESC LIMIT 1", (item_id, target)).fetchone()
            restored = before[0] if before else UNLABELLED
            cur = con.execute("INSERT INTO labels(item_id, label, annotator, created_at, undoes) VALUES (?, ?, ?, ?, ?)",
                              (item_id, restored, annotator, time.time(), target))
            return item_id, restored, cur.lastrowid


def _add_columns(con: sqlite3.Connection) -> None:
    for table, column, kind in _ADDED_COLUMNS:
        present = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
