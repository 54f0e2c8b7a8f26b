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
CREATE TABLE IF NOT EXISTS accuracy (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    labelled INTEGER NOT NULL,
    accuracy REAL NOT NULL,
    held_out INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""

DB_NAME = "project.sqlite"


class Store:
    def __init__(self, project_dir: Path):
        self.path = Path(project_dir) / DB_NAME
        if not self.path.exists():
            raise FileNotFoundError(f"{project_dir} is not a labelling project (no {DB_NAME}); create it with `batchal label init`")
        self._local = threading.local()

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
            with con:
                con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
                con.executemany("INSERT INTO items(path) VALUES (?)", [(p,) for p in item_paths])
        finally:
            con.close()
        return Store(project_dir)

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
        """The latest label of every labelled item."""
        rows = self.con.execute(
            "SELECT item_id, label FROM labels WHERE id IN (SELECT MAX(id) FROM labels GROUP BY item_id) ORDER BY item_id"
        )
        return dict(rows)

    def label_history(self) -> list[dict]:
        rows = self.con.execute("SELECT id, item_id, label, annotator, created_at FROM labels ORDER BY id")
        return [dict(zip(("id", "item_id", "label", "annotator", "created_at"), r)) for r in rows]

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

    def add_batch(self, strategy: str, item_ids: list[int], accuracy: Optional[tuple[int, float, int]] = None) -> int:
        """A new batch, and with it (same transaction) the accuracy estimate (labelled,
        accuracy, held_out) of the model that chose it."""
        with self.write() as con:
            if accuracy is not None:
                con.execute("INSERT INTO accuracy(labelled, accuracy, held_out, created_at) VALUES (?, ?, ?, ?)", (*accuracy, time.time()))
            batch_id = con.execute("INSERT INTO batches(strategy, created_at) VALUES (?, ?)", (strategy, time.time())).lastrowid
            con.executemany("INSERT INTO batch_items(batch_id, position, item_id) VALUES (?, ?, ?)",
                            [(batch_id, i, item) for i, item in enumerate(item_ids)])
            return batch_id
