"""Progress on the terminal and the results table: the library reports progress through callbacks;
here they become progress bars on a terminal and plain lines otherwise."""

from __future__ import annotations

import functools
import shutil
import statistics
import time
import sys

from batchal.experiment import labels_to_reach


def duration(seconds: float) -> str:
    """A time for people: 40 s, 3 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Bars:
    """Round and epoch bars (tqdm) on a terminal; one plain line per round otherwise."""

    def __init__(self, label: str, total_rounds: int, interactive: bool):
        self.label, self.interactive = label, interactive
        self.rounds = self.epochs = None
        self.total_rounds, self.done, self.started = total_rounds, 0, time.monotonic()
        if interactive:
            from tqdm.auto import tqdm

            # A terminal that reports no size (some pseudo-terminals) would get hidden, empty bars.
            size = shutil.get_terminal_size((100, 20))
            self._tqdm = functools.partial(tqdm, ncols=size.columns or 100, nrows=size.lines or 20, file=sys.stderr)
            self.rounds = self._tqdm(total=total_rounds, desc=label, unit="round")

    def resumed(self, round_: int, labelled: int) -> None:
        self.total_rounds -= round_  # the estimate counts this call's rounds only
        message = f"resuming {self.label} at round {round_} ({labelled} labels)"
        if self.interactive:
            self.rounds.update(round_)
            self.rounds.write(message, file=sys.stderr)
        else:
            print(message, flush=True)

    def round_started(self, round_: int, labelled: int) -> None:
        if self.interactive:
            self.epochs = self._tqdm(desc=f"  training on {labelled} labels", unit="epoch", leave=False)

    def epoch_done(self, record: dict) -> None:
        if self.epochs is not None:
            self.epochs.update(1)
            if "val_accuracy" in record:
                self.epochs.set_postfix(val_acc=f"{record['val_accuracy']:.3f}")

    def round_done(self, row: dict) -> None:
        s = row["seconds"]
        if self.interactive:
            if self.epochs is not None:
                self.epochs.close()
            self.rounds.update(1)
            self.rounds.set_postfix(labelled=row["labelled"], acc=f"{row['test_accuracy']:.3f}")
        else:
            self.done += 1
            left = max(0, self.total_rounds - self.done)
            hint = f"; about {duration((time.monotonic() - self.started) / self.done * left)} left in this run" if left else ""
            print(f"{self.label} round {row['round']}: {row['labelled']} labels, test accuracy {row['test_accuracy']:.4f}, "
                  f"NLL {row['test_nll']:.4f}; seconds train {s['train']:.1f} evaluate {s.get('evaluate', 0):.1f} score {s['score']:.1f} "
                  f"select {s['select']:.1f}{hint}", flush=True)

    def close(self) -> None:
        if self.rounds is not None:
            self.rounds.close()



def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line ("warning: ..."), written above any progress bars."""
    text = f"warning: {message}"
    try:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(text, file=sys.stderr)



def results_table(results: dict[str, list[list[dict]]], acquisition_size: int, thresholds: list[float]) -> str:
    head = ["strategy", "seeds", "final labels", "final accuracy (median)"] + [f"labels to {t:.0%} (median)" for t in thresholds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for strategy, runs in results.items():
        finals = [r[-1]["test_accuracy"] for r in runs if r]
        cells = [strategy, str(len(runs)), str(runs[0][-1]["labelled"]), f"{statistics.median(finals):.4f}"]
        for t in thresholds:
            reached = [labels_to_reach(r, t, acquisition_size) for r in runs]
            cells.append("not reached" if None in reached else str(statistics.median_low(reached)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

