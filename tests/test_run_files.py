"""Damaged or mismatched run folders: each damage refused with the file (and line) named, never
silently dropped; a finished run's budget may grow and the run continues as if uninterrupted."""

import json

import pytest

from batchal.cli import main
from batchal.experiment import run_experiment
from batchal.run_files import RunFileError, read_results
from batchal.report import write_report
from test_experiment import fast_config, without_seconds


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-round run (budget 20), shared read-only: tests copy its files."""
    folder = tmp_path_factory.mktemp("finished")
    run_experiment(fast_config(), folder)
    return folder


def copy_run(finished, folder, *, lines=None, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_bytes(config if config is not None else (finished / "config.json").read_bytes())
    text = (finished / "results.jsonl").read_bytes()
    (folder / "results.jsonl").write_bytes(text if lines is None else b"".join(lines))
    return folder


def result_lines(finished):
    return (finished / "results.jsonl").read_bytes().splitlines(keepends=True)


def edited(line: bytes, **changes) -> bytes:
    row = json.loads(line)
    for key, value in changes.items():
        if value is KeyError:
            row.pop(key)
        else:
            row[key] = value
    return (json.dumps(row) + "\n").encode()


def test_a_corrupt_middle_line_is_refused_with_its_number_and_nothing_is_deleted(finished, tmp_path):
    lines = result_lines(finished)
    damaged = lines[0] + b'{"round": 1, "labelled"\n' + lines[2]
    folder = copy_run(finished, tmp_path / "run", lines=[damaged])
    with pytest.raises(RunFileError, match=r"results\.jsonl, line 2: not valid JSON"):
        read_results(folder / "results.jsonl")
    assert (folder / "results.jsonl").read_bytes() == damaged  # the valid rows after it are still there
    with pytest.raises(RunFileError, match="line 2"):
        run_experiment(fast_config(), folder)


def test_a_torn_last_line_is_cut(finished, tmp_path):
    lines = result_lines(finished)
    folder = copy_run(finished, tmp_path / "run", lines=lines[:2] + [lines[2][:20]])
    assert len(read_results(folder / "results.jsonl")) == 2
    assert (folder / "results.jsonl").read_bytes() == b"".join(lines[:2])


def test_a_non_utf8_byte_is_refused_with_the_file_named(finished, tmp_path):
    lines = result_lines(finished)
    folder = copy_run(finished, tmp_path / "run", lines=[lines[0], lines[1].replace(b'"round"', b'"r\xffund"'), lines[2]])
    with pytest.raises(RunFileError, match=r"results\.jsonl, line 2: not UTF-8"):
        read_results(folder / "results.jsonl")


@pytest.mark.parametrize("change, message", [
    ({"acquired": KeyError}, "has no 'acquired'"),
    ({"test_accuracy": "high"}, "'test_accuracy' is 'high'"),
    ({"test_accuracy": 1.5}, "outside"),
    ({"round": 5}, "round 5 where round 1 was expected"),
    ({"acquired": [-3, 1, 2, 4, 5]}, "integers >= 0"),
    ({"acquired_labels": [1]}, "5 acquired indices but 1 acquired labels"),
])
def test_rows_with_missing_or_malformed_fields_are_refused(finished, tmp_path, change, message):
    lines = result_lines(finished)
    folder = copy_run(finished, tmp_path / "run", lines=[lines[0], edited(lines[1], **change), lines[2]])
    with pytest.raises(RunFileError, match=message):
        read_results(folder / "results.jsonl")
    assert main(["report", str(folder), "--out", str(tmp_path / "report")]) == 2  # an error line, no traceback


def test_an_item_acquired_twice_is_refused(finished, tmp_path):
    lines = result_lines(finished)
    first = json.loads(lines[0])["acquired"]
    folder = copy_run(finished, tmp_path / "run", lines=[lines[0], edited(lines[1], acquired=first), lines[2]])
    with pytest.raises(RunFileError, match=f"index {min(first)} is acquired a second time"):
        read_results(folder / "results.jsonl")


def test_an_out_of_range_index_is_refused_by_the_run(finished, tmp_path):
    lines = result_lines(finished)
    row = json.loads(lines[1])
    folder = copy_run(finished, tmp_path / "run", lines=[lines[0], edited(lines[1], acquired=[10**6] + row["acquired"][1:]), lines[2]])
    with pytest.raises(RunFileError, match=r"line 2: acquired index 1000000 is outside the data set"):
        run_experiment(fast_config(), folder)


def test_rows_of_another_configuration_are_refused(finished, tmp_path):
    # Rows written with initial_size 10 under a config.json that says 12.
    config = json.loads((finished / "config.json").read_text())
    config["initial_size"] = 12
    folder = copy_run(finished, tmp_path / "run", config=json.dumps(config).encode())
    with pytest.raises(RunFileError, match="line 1: 10 labelled where this run's configuration gives 12"):
        run_experiment(fast_config(initial_size=12), folder)


def test_results_without_config_are_refused_and_nothing_is_mixed(finished, tmp_path):
    folder = copy_run(finished, tmp_path / "run")
    (folder / "config.json").unlink()
    before = (folder / "results.jsonl").read_bytes()
    with pytest.raises(RunFileError, match=r"has rows but .*config\.json is missing"):
        run_experiment(fast_config(acquisition_size=3), folder)
    assert not (folder / "config.json").exists() and (folder / "results.jsonl").read_bytes() == before


@pytest.mark.parametrize("content, message", [(b'{"dataset": "digits",', "not valid JSON"), (b"\xff\xfe", "not UTF-8"), (b"[1, 2]", "expected a JSON object")])
def test_a_corrupt_config_is_named(finished, tmp_path, content, message):
    folder = copy_run(finished, tmp_path / "run", config=content)
    with pytest.raises(RunFileError, match=rf"config\.json: {message}"):
        run_experiment(fast_config(), folder)
    with pytest.raises(RunFileError, match=rf"config\.json: {message}"):
        write_report([folder], tmp_path / "report")


def test_budget_grows_on_a_finished_run_and_equals_an_uninterrupted_run(finished, tmp_path):
    folder = copy_run(finished, tmp_path / "run")
    grown = run_experiment(fast_config(budget=30), folder)
    straight = run_experiment(fast_config(budget=30), tmp_path / "straight")
    assert [r["labelled"] for r in grown] == [10, 15, 20, 25, 30]
    assert without_seconds(grown) == without_seconds(straight)
    assert json.loads((folder / "config.json").read_text())["budget"] == 30
    assert without_seconds(read_results(folder / "results.jsonl")) == without_seconds(straight)
    with pytest.raises(ValueError, match="only --budget may grow"):
        run_experiment(fast_config(budget=25), folder)


def test_a_second_process_on_a_running_experiment_is_refused(tmp_path):
    """Two writers on one run folder would interleave rows: while one holds the folder's lock
    (another process, here another open file description), run_experiment refuses at once,
    naming the holder's pid; once released, the run goes ahead."""
    import fcntl

    from batchal.experiment import ExperimentConfig, run_experiment
    from batchal.run_files import LOCK_NAME, RunInUseError

    config = ExperimentConfig(dataset="digits", strategy="random", acquisition_size=5, initial_size=10, budget=15, seed=0)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / LOCK_NAME, "a+") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write("4242")
        holder.flush()
        with pytest.raises(RunInUseError, match=r"another process \(pid 4242\) is running this experiment"):
            run_experiment(config, run_dir)
        assert not (run_dir / "results.jsonl").exists()
    rows = run_experiment(config, run_dir)
    assert rows[-1]["labelled"] == 15
