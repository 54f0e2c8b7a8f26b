"""Run files, one home for every label kind: a run folder's ``config.json`` and ``results.jsonl``.

Read (every row checked, a row torn by a crash cut off), append (whole rows, fsynced), write
atomically, lock (one process per run folder), and the row checks of each kind of run
(classification: ``test_accuracy``; regression: ``test_rmse``). The experiment loop, the
regression loop and the report all read and write runs through here.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional


class RunFileError(ValueError):
    """A run folder's ``config.json`` or ``results.jsonl`` is damaged or does not match its run."""


class RunInUseError(RunFileError):
    """Another process is running the experiment in this run folder right now."""


#: The file a running experiment holds an exclusive lock on, inside its run folder.
LOCK_NAME = ".batchal-lock"


@contextmanager
def exclusive(run_dir: Path):
    """Hold an exclusive lock on the run folder for as long as the experiment runs, so that a
    second process started on the same folder (a second `batchal run`, a study started twice)
    is refused at once instead of interleaving rows with the first. The lock is the operating
    system's (flock): it goes with the process, so a killed run leaves nothing to clean up. On
    systems without fcntl (Windows) runs are not locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(run_dir / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip()
            raise RunInUseError(f"{run_dir}: another process{f' (pid {owner})' if owner.isdigit() else ''} is running this "
                               "experiment; wait for it to finish or stop it, then run again to resume") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


#: Keys every results row has, with the type each holds.
_ROW_KEYS = {"round": int, "labelled": int, "test_accuracy": (int, float), "acquired": list, "acquired_labels": list}


def check_classification_row(row, path: Path, line: int, expected_round: int, seen: set) -> None:
    where = f"{path}, line {line}"
    if not isinstance(row, dict):
        raise RunFileError(f"{where}: expected a JSON object (one round), got {type(row).__name__}")
    for key, kind in _ROW_KEYS.items():
        if key not in row:
            raise RunFileError(f"{where}: the row has no {key!r} (keys: {', '.join(sorted(row)) or 'none'}); the file is damaged or not a batchal results file")
        if isinstance(row[key], bool) or not isinstance(row[key], kind):
            raise RunFileError(f"{where}: {key!r} is {row[key]!r}; expected {getattr(kind, '__name__', 'a number')}")
    if row["round"] != expected_round:
        raise RunFileError(f"{where}: round {row['round']} where round {expected_round} was expected (rows must be consecutive from 0)")
    if not 0 <= row["test_accuracy"] <= 1:
        raise RunFileError(f"{where}: test_accuracy {row['test_accuracy']!r} is outside [0, 1]")
    acquired = row["acquired"]
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in acquired):
        raise RunFileError(f"{where}: 'acquired' must list data set indices (integers >= 0), got {acquired!r}")
    if len(row["acquired_labels"]) != len(acquired):
        raise RunFileError(f"{where}: {len(acquired)} acquired indices but {len(row['acquired_labels'])} acquired labels")
    distinct = set(acquired)
    repeated = sorted(distinct & seen)
    if not repeated and len(distinct) != len(acquired):  # a repeat inside the round: found in one pass, not by count()
        once: set = set()
        repeated = [next(i for i in acquired if i in once or once.add(i))]
    if repeated:
        raise RunFileError(f"{where}: data set index {repeated[0]} is acquired a second time; a run labels each item once")
    seen.update(acquired)


def read_results(path: Path, check_row: Optional[Callable] = None) -> list[dict]:
    """Every row of a results file, checked; a partly written last line (a crash mid-write) is cut off.
    ``check_row(row, path, line, expected_round, seen)`` checks each row (default: a
    classification run's; ``batchal.regression_run`` passes its own).

    A row is only ever appended whole, newline last, so an unterminated last line is the only
    damage a crash leaves; it is removed from the file. Any other damage (a line that is not
    UTF-8 or not JSON, a missing key, rounds out of order, an item acquired twice) raises
    ``RunFileError`` naming the file and line: rows are never silently dropped.
    """
    if not path.exists():
        return []
    if not path.is_file():
        raise RunFileError(f"{path} is a folder or another non-file; a run's results.jsonl must be a file: move it away and run again")
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows: list[dict] = []
    seen: set[int] = set()
    for number, line in enumerate(lines[:-1], start=1):
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RunFileError(f"{path}, line {number}: not UTF-8 text (byte {exc.start}); the file is damaged") from None
        except json.JSONDecodeError as exc:
            raise RunFileError(f"{path}, line {number}: not valid JSON ({exc.msg} at column {exc.colno}); the file is damaged") from None
        if rows and "stop_reason" in rows[-1]:
            raise RunFileError(f"{path}, line {number}: a row follows the run's final row (line {number - 1} has a stop_reason)")
        (check_row or check_classification_row)(row, path, number, len(rows), seen)
        rows.append(row)
    if lines[-1]:  # a torn last row: what follows the last newline
        with open(path, "r+b") as f:
            f.truncate(len(raw) - len(lines[-1]))
    return rows


def append_row(path: Path, row: dict) -> None:
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_config(path: Path) -> dict:
    """A run's ``config.json`` as a dict, or ``RunFileError`` naming the file."""
    if path.exists() and not path.is_file():
        raise RunFileError(f"{path} is a folder or another non-file; a run's config.json must be a file: move it away and run again")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}: not UTF-8 text (byte {exc.start}); the file is damaged") from None
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}); the file is damaged") from None
    if not isinstance(config, dict):
        raise RunFileError(f"{path}: expected a JSON object of settings, got {type(config).__name__}")
    if config.get("task") == "regression":
        return config
    # Settings added after a run was written hold their defaults there (it ran with them).
    if isinstance(config.get("train"), dict):
        config["train"] = {**_ADDED_TRAIN_SETTINGS, **config["train"]}
    return {**_ADDED_SETTINGS, **config}


#: Settings that configurations written before them lack, with the value those runs had.
_ADDED_SETTINGS = {"posterior": "mc_dropout", "members": 5, "stop": None, "initial_selection": "balanced", "initial_indices": None,
                   "label_column": None, "image_size": 28, "rgb": False, "imbalance": None}
#: Training settings added later, with the value earlier runs had.
_ADDED_TRAIN_SETTINGS = {"sampler": "replacement", "until_accuracy": None, "grad_clamp": None, "reinit_every": 1000, "reinit_below": 0.2}




def regression_row_checker(pool_size: Optional[int] = None):
    """A regression row's checks, for ``read_results``; with ``pool_size`` (the loop resuming), acquired
    positions must lie in the pool."""
    def check(row, path: Path, line: int, expected_round: int, seen: set) -> None:
        where = f"{path}, line {line}"
        if not isinstance(row, dict) or row.get("round") != expected_round:
            raise RunFileError(f"{where}: expected round {expected_round} (rows must be consecutive from 0)")
        if not isinstance(row.get("test_rmse"), (int, float)) or isinstance(row.get("test_rmse"), bool):
            raise RunFileError(f"{where}: the row has no numeric 'test_rmse'; the file is damaged or not a regression run's")
        acquired = row.get("acquired", [])
        if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < (pool_size if pool_size is not None else float('inf')) for i in acquired):
            raise RunFileError(f"{where}: an acquired position outside the pool of {pool_size}")
        if set(acquired) & seen or len(set(acquired)) != len(acquired):
            raise RunFileError(f"{where}: a pool position is acquired a second time; a run labels each item once")
        seen.update(acquired)

    return check


def row_checker(config: dict) -> Optional[Callable]:
    """The row check of the run a ``config.json`` describes (None: a classification run's, the default)."""
    return regression_row_checker() if config.get("task") == "regression" else None
