"""One line per run folder under ROOT: rounds done, labels reached, last accuracy, finished or not.

Usage: python scripts/paper_progress.py ROOT   (e.g. results/mnist-paper/runs, or a RUNS_ROOT of gpu_paper_protocol.sh)
"""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
done = total = 0
for path in sorted(root.rglob("results.jsonl")):
    # Read only, while workers may be appending: a last line without its newline is still being
    # written and is left out (batchal.run_files.read_results would cut it from the file).
    text = path.read_text()
    complete = text if text.endswith("\n") else text[: text.rfind("\n") + 1]
    rows = [json.loads(line) for line in complete.splitlines() if line.strip()]
    total += 1
    if not rows:
        print(f"{path.parent.relative_to(root)}: no rows")
        continue
    last = rows[-1]
    finished = "stop_reason" in last
    done += finished
    seconds = sum(sum(r.get("seconds", {}).values()) for r in rows)
    print(f"{path.parent.relative_to(root)}: {len(rows)} rounds, {last['labelled']} labels, accuracy {last['test_accuracy']:.4f}, "
          f"{seconds:.0f} s{' (finished)' if finished else ''}")
print(f"{done}/{total} runs finished")
