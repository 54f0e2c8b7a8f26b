"""The README runs as it stands: its own-model loop executes, its imports exist and every batchal command line it shows parses."""

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


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def _commands():
    """Every `batchal ...` command line of the README's bash blocks, continuations joined,
    comments, redirections and a trailing & dropped."""
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].split(">", 1)[0].strip().rstrip("&").strip()
            if line.startswith("batchal "):
                out.append(line)
    return out


def test_every_readme_import_exists():
    """A renamed or moved API breaks the README: every `from batchal... import ...` it shows imports."""
    import importlib

    lines = [line.strip() for block in _blocks("python") for line in block.splitlines() if line.strip().startswith("from batchal")]
    assert len(lines) >= 4
    for line in lines:
        module, names = re.match(r"from (\S+) import (.+)", line).groups()
        imported = importlib.import_module(module)
        for name in names.split("#")[0].split(","):
            assert hasattr(imported, name.strip()), line


def test_every_readme_command_line_parses():
    """Every `batchal ...` line the README shows is accepted by the command line's parser (its
    subcommand, flags and their values), the Label Studio and regression ones included."""
    import shlex

    from batchal.cli import build_parser

    commands = _commands()
    assert any(c.startswith("batchal label-studio serve") for c in commands) and any("--dataset diabetes" in c for c in commands)
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            raise AssertionError(f"README command does not parse: {command}") from exc
