"""Every generated block of README.md and results/README.md equals what the committed rows give.

`scripts/generated.py --check` regenerates them into copies (BADGE's headline and findings through
`scripts/badge_report.py --blocks-only`, the sweep, faithful-mode, regression, paper-protocol,
BADGE cost and CPU-ranking blocks) and prints any difference; nothing in the repository is written.
"""

import subprocess
import sys

import pytest

from conftest import REPO


def test_every_generated_block_matches_the_rows():
    if not (REPO / "results" / "badge-paper" / "runs").is_dir():
        pytest.skip("the committed results are not in this checkout")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "generated.py"), "--check"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, "generated blocks differ from the rows (run python scripts/generated.py):\n" + done.stdout[-4000:] + done.stderr[-2000:]


def test_the_check_finds_a_changed_number(tmp_path, monkeypatch):
    """The check is not vacuous: a typed change inside a block is reported."""
    sys.path.insert(0, str(REPO / "scripts"))
    import generated

    original = (REPO / "results" / "README.md").read_text()
    start = original.index("<!-- regression:start -->")
    tampered = original[:start] + original[start:].replace("0.740", "0.741", 1)
    copy = tmp_path / "results" / "README.md"
    copy.parent.mkdir()
    copy.write_text(tampered)
    (tmp_path / "README.md").write_text((REPO / "README.md").read_text())
    generated.regenerate(tmp_path, REPO / "results")
    assert copy.read_text() == original
