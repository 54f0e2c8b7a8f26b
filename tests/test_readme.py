"""The README's own-model loop runs as it stands."""

import re

from conftest import REPO


def test_the_readmes_own_model_loop_runs(capsys):
    text = (REPO / "README.md").read_text()
    section = text.split("### Your own model and training loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in out] == ["round 0", "round 1", "round 2"]
    assert "50 labels" in out[-1]
