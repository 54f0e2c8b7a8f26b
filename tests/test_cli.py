"""The command line: run with flags and TOML, the comparison table, clear errors."""

import json

import pytest

from batchal.cli import main

SMALL = ["--dataset", "digits", "--acquisition-size", "5", "--initial-size", "10", "--budget", "20", "--mc-samples", "4",
         "--validation-size", "50", "--max-epochs", "2", "--epoch-samples", "128"]


def test_run_several_strategies_and_seeds_prints_a_table(tmp_path, capsys):
    code = main(["run", *SMALL, "--strategy", "bald,random", "--seeds", "0,1", "--out", str(tmp_path), "--thresholds", "0.5"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| bald | 2 | 20 |" in out and "| random | 2 | 20 |" in out and "labels to 50%" in out
    for strategy in ("bald", "random"):
        for seed in (0, 1):
            assert (tmp_path / "digits" / f"{strategy}-b5-seed{seed}" / "results.jsonl").is_file()
    assert "round 0: 10 labels" in out  # plain progress lines when not on a terminal
    # The run ends with its plots, in the study's own report folder, and the command that rewrites them.
    report = tmp_path / "digits" / "report-b5-bald+random"
    assert (report / "report.md").is_file() and list(report.glob("*.png"))
    assert f"batchal report {tmp_path / 'digits'} --out {report} --thresholds 0.5" in out
    # Another study in the same --out gets its own report folder; the first one's is left as it was.
    before = (report / "report.md").read_text()
    assert main(["run", *SMALL, "--strategy", "random", "--seeds", "0", "--out", str(tmp_path), "--thresholds", "0.5"]) == 0
    assert (tmp_path / "digits" / "report-b5-random" / "report.md").is_file() and (report / "report.md").read_text() == before


def test_toml_config_with_flag_override(tmp_path, capsys):
    config = tmp_path / "exp.toml"
    config.write_text('dataset = "digits"\nstrategies = ["entropy"]\nseeds = [3]\nacquisition_size = 4\ninitial_size = 10\n'
                      'budget = 18\nmc_samples = 3\nvalidation_size = 40\n[train]\nmax_epochs = 1\nepoch_samples = 64\n')
    assert main(["run", "--config", str(config), "--budget", "14", "--out", str(tmp_path / "o")]) == 0
    run_dir = tmp_path / "o" / "digits" / "entropy-b4-seed3"
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["budget"] == 14 and saved["train"]["max_epochs"] == 1 and saved["seed"] == 3


@pytest.mark.parametrize("argv, message", [
    (["run", "--dataset", "nope"], "dataset must be one of"),
    (["run", *SMALL, "--strategy", "bald,nope"], "unknown nope"),
    (["run", *SMALL, "--seeds", "a,b"], "comma-separated"),
    (["run", *SMALL, "--acquisition-size", "0"], "acquisition_size"),
    (["run", "--config", "/no/such.toml"], "no such file"),
])
def test_bad_arguments_give_one_clear_line(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("batchal: error:") and message in err and "Traceback" not in err


def test_unknown_toml_key_refused(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('datset = "digits"\n')
    assert main(["run", "--config", str(config)]) == 2
    assert "unknown key(s) datset" in capsys.readouterr().err


def test_datasets_lists_every_loader(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "mnist", "fashion-mnist", "emnist-balanced", "letter", "repeated-mnist"):
        assert name in out
    assert "built in" in out


def test_strategies_lists_formulas(capsys):
    assert main(["strategies"]) == 0
    assert "BatchBALD" in capsys.readouterr().out


def test_progress_bars_on_a_terminal(tmp_path):
    """Under a pseudo-terminal the rounds and training show as progress bars, not plain lines."""
    import os
    import pty
    import subprocess
    import sys

    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "batchal.cli", "run", *SMALL, "--strategy", "random", "--out", str(tmp_path)],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    output = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(timeout=300) == 0
    text = output.decode(errors="replace")
    assert "random seed 0" in text and ("round/s" in text or "s/round" in text)
    assert "round 0: 10 labels" not in text  # no plain progress lines on a terminal


@pytest.mark.parametrize("flag, value", [("--seeds", "a,b"), ("--seeds", ","), ("--thresholds", "0.9,x")])
def test_list_parse_errors_name_the_flag(flag, value, capsys, tmp_path):
    assert main(["run", *SMALL, flag, value, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"batchal: error: {flag}: expected comma-separated" in err and f"e.g. {flag} " in err


def test_resumed_run_says_so_and_the_table_explains_its_counting(tmp_path, capsys):
    args = ["run", *SMALL, "--strategy", "random", "--out", str(tmp_path)]
    assert main(args[:-2] + ["--budget", "15", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(args) == 0  # the budget grew from 15 to 20: the finished run continues
    out = capsys.readouterr().out
    assert "resuming random seed 0 at round 1 (15 labels)" in out
    assert "round 0:" not in out and "round 1: 15 labels" in out
    assert "minus b, the acquisition size" in out


def test_warnings_are_one_line_without_source(tmp_path, capsys):
    # 10 joint-entropy samples over K = 4 masks: BatchBALD warns that its estimate will be noisy.
    assert main(["run", *SMALL, "--strategy", "batchbald", "--num-samples", "10", "--budget", "15", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "noisy" in line]
    assert lines and all(line.startswith("warning: ") for line in lines)
    assert "warnings.warn" not in err and ".py:" not in err


@pytest.mark.parametrize("place", ["before", "after"])
def test_threads_is_accepted_before_or_after_the_subcommand(tmp_path, capsys, monkeypatch, place):
    import batchal.threads as threads

    seen = []
    monkeypatch.setattr(threads, "use_threads", lambda n: seen.append(n))
    argv = ["strategies", "random"]
    argv = ["--threads", "2", *argv] if place == "before" else [*argv, "--threads", "2"]
    assert main(argv) == 0 and seen == ["2"]
    seen.clear()
    assert main(["datasets"]) == 0 and seen == [None]  # not given: the default


def test_run_with_threads_after_the_subcommand_runs_and_a_bad_value_is_one_line(tmp_path, capsys):
    assert main(["run", "--threads", "1", *SMALL, "--strategy", "random", "--out", str(tmp_path)]) == 0
    assert main(["run", "--threads", "many", *SMALL, "--out", str(tmp_path)]) == 2
    assert "--threads" in capsys.readouterr().err


def test_version_answers_without_importing_torch():
    import subprocess
    import sys

    code = "import sys; from batchal.cli import main; main(['--version']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["batchal", __import__("batchal").__version__, "False"]


def test_help_lists_every_command_without_importing_torch():
    import subprocess
    import sys

    from batchal.cli import COMMANDS

    code = ("import sys\nfrom batchal.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("TORCH False")
    for command in COMMANDS:
        assert command.replace("_", "-") in out
    # A command's own parser is built in full when it is named, with --threads after it too.
    assert main(["--threads", "1", "strategies", "random"]) == 0
