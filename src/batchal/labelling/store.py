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

#: Tables added after the first release (created on open when missing).
_ADDED_TABLES = """
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL UNIQUE, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS claims (
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (item_id, annotator)
);
CREATE TABLE IF NOT EXISTS flags (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator TEXT,
    kind TEXT NOT NULL,
    note TEXT,
    created_at REAL NOT NULL
);
"""

#: An unlabelled item stays claimed by the annotator it was handed to for this long.
CLAIM_SECONDS = 600.0

#: Columns added after the first release: (table, column, type). Older projects gain them on open.
_ADDED_COLUMNS = [
    ("labels", "undoes", "INTEGER"),            # the label row this row undoes (its label: the one before, '' for none)
    ("batch_items", "suggestion", "TEXT"),      # the model's most probable class when the batch was chosen
    ("batch_items", "probability", "REAL"),     # and its probability
    ("batch_items", "score", "REAL"),           # why it was chosen: its acquisition score
    ("batches", "information", "REAL"),         # the batch's score (BatchBALD: I(y_1..y_b; w); top-b: the sum)
    ("batches", "kappa", "REAL"),               # Cohen's kappa between this model's predictions and the last one's
    ("batch_items", "audit", "INTEGER"),        # 1: a uniformly random item, for the accuracy estimate only
    ("accuracy", "low", "REAL"),                # the estimate's 95% interval (Wilson)
    ("accuracy", "high", "REAL"),
    ("accuracy", "per_item", "TEXT"),           # JSON {item id: 1 right / 0 wrong} on the audit items
    ("batch_items", "relabel", "INTEGER"),      # a labelled item asked for one more label: the labels it needs in all (labelling.relabel)
]

#: The label of an item that an undo returned to "not labelled".
UNLABELLED = ""


def vote(labels: list[str]) -> Optional[str]:
    """The majority label of one item's annotators (each annotator's latest label counts once),
    or None when the top labels tie (two annotators who disagree, say): the documented rule."""
    if not labels:
        return None
    counts = {label: labels.count(label) for label in set(labels)}
    top = max(counts.values())
    winners = [label for label, n in counts.items() if n == top]
    return winners[0] if len(winners) == 1 else None


class Store:
    def __init__(self, project_dir: Path):
        self.path = Path(project_dir) / DB_NAME
        if not self.path.exists():
            raise FileNotFoundError(f"{project_dir} is not a labelling project (no {DB_NAME}); create it with `batchal label init`")
        self._local = threading.local()
        with self.write() as con:  # projects from earlier versions gain the newer tables and columns
            for statement in _ADDED_TABLES.split(";"):
                if statement.strip():
                    con.execute(statement)
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
            con.executescript(_ADDED_TABLES)
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

    def annotator_labels(self) -> dict[int, dict[str, tuple[str, int]]]:
        """Every item's latest label from each annotator: {item: {annotator: (label, row id)}}
        (an annotator whose latest row for the item is an undo to 'not labelled' is left out;
        labels without an annotator count as the annotator '')."""
        rows = self.con.execute(
            "SELECT item_id, COALESCE(annotator, ''), label, id FROM labels WHERE id IN "
            "(SELECT MAX(id) FROM labels GROUP BY item_id, COALESCE(annotator, '')) ORDER BY item_id"
        )
        out: dict[int, dict[str, tuple[str, int]]] = {}
        for item, annotator, label, row in rows:
            if label != UNLABELLED:
                out.setdefault(item, {})[annotator] = (label, row)
        return out

    def current_labels(self) -> dict[int, str]:
        """Every decided item's training label, by vote: the label most of its annotators' latest
        labels give (one annotator: their latest label). An item whose top labels tie is left
        out (``unresolved``): it is not trained on, and it needs one more annotator's label
        (``labels_needed``), so it is offered to another annotator."""
        out = {}
        for item, given in self.annotator_labels().items():
            decided = vote([label for label, _ in given.values()])
            if decided is not None:
                out[item] = decided
        return out

    def unresolved(self) -> dict[int, dict[str, int]]:
        """Items whose annotators' votes tie: {item: {label: votes}}."""
        out = {}
        for item, given in self.annotator_labels().items():
            labels = [label for label, _ in given.values()]
            if vote(labels) is None:
                out[item] = {label: labels.count(label) for label in sorted(set(labels))}
        return out

    def label_history(self) -> list[dict]:
        rows = self.con.execute("SELECT id, item_id, label, annotator, created_at, undoes FROM labels ORDER BY id")
        return [dict(zip(("id", "item_id", "label", "annotator", "created_at", "undoes"), r)) for r in rows]

    def batch_details(self, batch_id: int) -> list[dict]:
        rows = self.con.execute("SELECT item_id, suggestion, probability, score, audit, COALESCE(relabel, 0) FROM batch_items "
                                "WHERE batch_id = ? ORDER BY position", (batch_id,))
        return [dict(zip(("id", "suggestion", "probability", "score", "audit", "relabel"), r)) for r in rows]

    def batch_history(self) -> list[dict]:
        rows = self.con.execute("SELECT id, strategy, information, kappa, created_at FROM batches ORDER BY id")
        return [dict(zip(("id", "strategy", "information", "kappa", "created_at"), r)) for r in rows]

    def labelled_predictions(self) -> dict[int, tuple[str, float]]:
        """The latest model's prediction for the items that were labelled when it was trained."""
        labelled = self.current_labels()
        return {i: v for i, v in self.predictions().items() if i in labelled}

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
        rows = self.con.execute("SELECT labelled, accuracy, held_out, low, high, per_item, created_at FROM accuracy ORDER BY id")
        keys = ("labelled", "accuracy", "held_out", "low", "high", "per_item", "created_at")
        out = [dict(zip(keys, r)) for r in rows]
        for row in out:
            row["per_item"] = {int(k): v for k, v in json.loads(row["per_item"]).items()} if row["per_item"] else {}
        return out

    def chosen_and_random(self) -> tuple[list[int], list[int]]:
        """(items the batches chose, audit items), each in the order the batches offered them (first offer)."""
        chosen: dict[int, None] = {}
        random_items: dict[int, None] = {}
        for item, audit in self.con.execute("SELECT item_id, COALESCE(audit, 0) FROM batch_items ORDER BY batch_id, position"):
            (random_items if audit else chosen).setdefault(item, None)
        return [i for i in chosen if i not in random_items], list(random_items)

    def audit_items(self) -> set[int]:
        """Items drawn uniformly at random for the accuracy estimate (never trained on while it is estimated)."""
        return {r[0] for r in self.con.execute("SELECT item_id FROM batch_items WHERE audit = 1")}

    def flagged(self) -> dict[int, dict]:
        """Items taken out of the pool by a skip or flag: {item: {kind, note, annotator}} (latest)."""
        rows = self.con.execute("SELECT item_id, kind, note, annotator FROM flags WHERE id IN (SELECT MAX(id) FROM flags GROUP BY item_id)")
        return {i: {"kind": k, "note": n, "annotator": a} for i, k, n, a in rows if k != "unflag"}

    def add_flag(self, item_id: int, kind: str, note: Optional[str], annotator: Optional[str]) -> int:
        with self.write() as con:
            return con.execute("INSERT INTO flags(item_id, kind, note, annotator, created_at) VALUES (?, ?, ?, ?, ?)",
                               (item_id, kind, note, annotator, time.time())).lastrowid

    def set_meta(self, key: str, value: Any) -> None:
        """One project setting (JSON), replaced atomically."""
        with self.write() as con:
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # --- annotators and claims ---
    def add_annotator(self, name: str, token_sha256: str) -> None:
        with self.write() as con:
            if con.execute("SELECT 1 FROM annotators WHERE name = ?", (name,)).fetchone():
                raise ValueError(f"an annotator named {name!r} already exists")
            con.execute("INSERT INTO annotators(name, token_sha256, created_at) VALUES (?, ?, ?)", (name, token_sha256, time.time()))

    def annotator_for(self, token_sha256: str) -> Optional[str]:
        row = self.con.execute("SELECT name FROM annotators WHERE token_sha256 = ?", (token_sha256,)).fetchone()
        return row[0] if row else None

    def annotators(self) -> list[str]:
        return [r[0] for r in self.con.execute("SELECT name FROM annotators ORDER BY created_at")]

    def labels_needed(self, given: dict, overlap: int, relabel_to: int = 0) -> int:
        """Labels from different annotators an item needs: ``overlap`` (or ``relabel_to`` when the
        current batch asks more of it), and one more than it has while its votes tie."""
        labels = [label for label, _ in given.values()]
        need = max(overlap, relabel_to)
        return max(need, len(labels) + 1) if labels and vote(labels) is None else need

    def relabel_items(self) -> dict[int, int]:
        """The current batch's items that were labelled already and are asked for one more label:
        {item: the labels it needs in all}."""
        return {r[0]: r[1] for r in self.con.execute("SELECT item_id, relabel FROM batch_items WHERE relabel > 0 AND batch_id = "
                                                     "(SELECT MAX(id) FROM batches)")}

    def claim(self, annotator: str, batch_items: list[int], overlap: int, now: Optional[float] = None) -> list[int]:
        """The items of the batch this annotator should label now: those it holds or labelled,
        plus a fair share of the items that still need labels and that nobody else holds
        (an item needs ``overlap`` labels from different annotators), up to the batch's size
        times ``overlap`` divided by the number of registered annotators. One transaction, so two
        annotators asking at once never get the same item beyond ``overlap``."""
        now = time.time() if now is None else now
        with self.write() as con:
            con.execute("DELETE FROM claims WHERE claimed_at < ?", (now - CLAIM_SECONDS,))
            given = self.annotator_labels()
            flagged = self.flagged()
            relabel = self.relabel_items()
            holders: dict[int, set[str]] = {}
            for item, who in con.execute("SELECT item_id, annotator FROM claims"):
                holders.setdefault(item, set()).add(who)
            mine, open_items = [], []
            for item in batch_items:
                labelled_by = set(given.get(item, {}))
                if annotator in labelled_by or annotator in holders.get(item, set()):
                    mine.append(item)
                elif item not in flagged and len(labelled_by | holders.get(item, set())) < self.labels_needed(given.get(item, {}), overlap,
                                                                                                    relabel.get(item, 0)):
                    open_items.append(item)
            if annotator == "":  # the owner's token: sees every item no named annotator holds, claims nothing
                held = {i for i, whos in holders.items() if whos - set(given.get(i, {}))}
                return [i for i in batch_items if i not in held or i in given]
            # A fair share of the batch for each registered annotator; whoever finishes early takes
            # more of what is left (claims of an idle annotator lapse after CLAIM_SECONDS).
            team = con.execute("SELECT COUNT(*) FROM annotators").fetchone()[0]
            share = -(-len(batch_items) * overlap // max(1, team))
            pending = [i for i in mine if annotator not in given.get(i, {})]
            take = open_items[: max(0, share - len(pending))]
            con.executemany("INSERT OR REPLACE INTO claims(item_id, annotator, claimed_at) VALUES (?, ?, ?)",
                            [(i, annotator, now) for i in pending + take])
            return [i for i in batch_items if i in set(mine) | set(take)]

    def holder(self, item_id: int, annotator: str, overlap: int, now: Optional[float] = None) -> Optional[str]:
        """Why ``annotator`` may not label the item now (another annotator holds it, or it has
        its ``overlap`` labels), or None when it may."""
        now = time.time() if now is None else now
        labelled = self.annotator_labels().get(item_id, {})
        given = set(labelled)
        if annotator in given:
            return None
        overlap = self.labels_needed(labelled, overlap, self.relabel_items().get(item_id, 0))
        others = {r[0] for r in self.con.execute("SELECT annotator FROM claims WHERE item_id = ? AND claimed_at >= ? AND annotator != ?",
                                                 (item_id, now - CLAIM_SECONDS, annotator))}
        if len(given | others) >= overlap:
            who = sorted(others - given)
            return (f"item {item_id} is being labelled by {', '.join(who)}" if who else
                    f"item {item_id} already has {len(given)} label(s) (overlap {overlap})")
        return None

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
        accuracy: Optional[tuple] = None,
        details: Optional[list[tuple[Optional[str], Optional[float], Optional[float]]]] = None,
        information: Optional[float] = None,
        predictions: Optional[list[tuple[int, str, float]]] = None,
        kappa: Optional[float] = None,
        audit: Optional[list[bool]] = None,
        relabel: Optional[list[int]] = None,
    ) -> int:
        """A new batch, and with it in the same transaction what the model that chose it said:
        its accuracy estimate (labelled, accuracy, held_out), each item's (suggestion,
        probability, score), the batch's information and the predictions for every item."""
        details = details or [(None, None, None)] * len(item_ids)
        audit = audit or [False] * len(item_ids)
        relabel = relabel or [0] * len(item_ids)  # per item: 0, or the labels a relabelled item needs in all
        with self.write() as con:
            if accuracy is not None:  # (labelled, accuracy, n[, low, high, per_item])
                labelled, acc, n, *rest = accuracy
                low, high, per_item = (rest + [None, None, None])[:3]
                con.execute("INSERT INTO accuracy(labelled, accuracy, held_out, low, high, per_item, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (labelled, acc, n, low, high, json.dumps(per_item) if per_item is not None else None, time.time()))
            if predictions is not None:
                con.execute("DELETE FROM predictions")
                con.executemany("INSERT INTO predictions(item_id, label, probability) VALUES (?, ?, ?)", predictions)
            batch_id = con.execute("INSERT INTO batches(strategy, created_at, information, kappa) VALUES (?, ?, ?, ?)",
                                   (strategy, time.time(), information, kappa)).lastrowid
            con.executemany("INSERT INTO batch_items(batch_id, position, item_id, suggestion, probability, score, audit, relabel) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [(batch_id, i, item, *d, int(a), int(r)) for i, (item, d, a, r)
                                                                in enumerate(zip(item_ids, details, audit, relabel))])
            return batch_id

    def undo_last_label(self, annotator: Optional[str] = None) -> Optional[tuple[int, str, int]]:
        """Undo this annotator's latest label that is not an undo and not undone yet, by a new
        row holding the annotator's label of the item from before it ('' when it had none);
        nothing is deleted, and other annotators' labels are never touched. Returns (item_id,
        restored label, new row id), or None when there is nothing to undo."""
        who = annotator or ""
        with self.write() as con:
            row = con.execute(
                "SELECT id, item_id FROM labels WHERE undoes IS NULL AND COALESCE(annotator, '') = ? AND id NOT IN "
                "(SELECT undoes FROM labels WHERE undoes IS NOT NULL) ORDER BY id DESC LIMIT 1", (who,)
            ).fetchone()
            if row is None:
                return None
            target, item_id = row
            before = con.execute("SELECT label FROM labels WHERE item_id = ? AND id < ? AND COALESCE(annotator, '') = ? "
                                 "ORDER BY id DESC LIMIT 1", (item_id, target, who)).fetchone()
            restored = before[0] if before else UNLABELLED
            cur = con.execute("INSERT INTO labels(item_id, label, annotator, created_at, undoes) VALUES (?, ?, ?, ?, ?)",
                              (item_id, restored, annotator, time.time(), target))
            return item_id, restored, cur.lastrowid


def _add_columns(con: sqlite3.Connection) -> None:
    for table, column, kind in _ADDED_COLUMNS:
        present = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
