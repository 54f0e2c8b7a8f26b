"""Your own data in `batchal run --dataset PATH`: image folders, tars, .npz, CSV and Parquet, with
clear refusals and a fingerprint that keeps a run folder to its data."""

import io
import tarfile

import numpy as np
import pytest
import torch

from batchal.cli import main
from batchal.data import load_dataset
from batchal.experiment import ExperimentConfig, run_experiment
from batchal.run_files import RunFileError

RUN = ["--strategy", "random", "--acquisition-size", "5", "--initial-size", "10", "--budget", "20", "--mc-samples", "2",
       "--max-epochs", "1", "--epoch-samples", "64"]


def blobs(n=200, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return (rng.normal(size=(n, d)) + np.eye(3, d)[y] * 3).astype(np.float32), y


def test_npz_with_and_without_a_test_split(tmp_path):
    x, y = blobs()
    np.savez(tmp_path / "a.npz", x=x, y=y, class_names=np.array(["ant", "bee", "cat"]))
    data = load_dataset(str(tmp_path / "a.npz"))
    assert len(data.train_y) == 160 and len(data.test_y) == 40 and data.class_names == ["ant", "bee", "cat"]  # the stated 20%
    np.savez(tmp_path / "b.npz", x=x[:150], y=y[:150], x_test=x[150:], y_test=y[150:])
    data = load_dataset(str(tmp_path / "b.npz"))
    assert len(data.train_y) == 150 and torch.equal(data.test_x, torch.from_numpy(x[150:]))
    np.savez(tmp_path / "bad.npz", x=x, y=y[:10])
    with pytest.raises(ValueError, match="x has 200 rows but y has 10"):
        load_dataset(str(tmp_path / "bad.npz"))


def test_csv_and_parquet_tables_standardised_and_refused_when_malformed(tmp_path):
    x, y = blobs()
    header = ",".join(f"f{i}" for i in range(5)) + ",kind\n"
    (tmp_path / "t.csv").write_text(header + "".join(",".join(f"{v:.4f}" for v in row) + f",{'abc'[c]}\n" for row, c in zip(x, y)))
    data = load_dataset(str(tmp_path / "t.csv"), label_column="kind")
    assert data.class_names == ["a", "b", "c"] and data.train_x.shape == (160, 5)
    assert torch.allclose(data.train_x.mean(0), torch.zeros(5), atol=1e-5)  # standardised on the training split
    with pytest.raises(ValueError, match="no column 'label'"):
        load_dataset(str(tmp_path / "t.csv"), label_column="label")
    with pytest.raises(ValueError, match="needs --label-column"):
        load_dataset(str(tmp_path / "t.csv"))
    (tmp_path / "text.csv").write_text("colour,size,kind\nred,1,a\nblue,2,b\nred,3,a\nblue,4,b\nred,5,a\n")
    with pytest.raises(ValueError, match="column\\(s\\) colour are not numeric"):
        load_dataset(str(tmp_path / "text.csv"), label_column="kind")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({**{f"f{i}": x[:, i] for i in range(5)}, "kind": [str(c) for c in y]}), tmp_path / "t.parquet")
    assert load_dataset(str(tmp_path / "t.parquet"), label_column="kind").train_x.shape == (160, 5)


def _png(value, side=10):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_folders_and_tars(tmp_path):
    pytest.importorskip("PIL")
    for split, n in (("train", 6), ("test", 2)):
        for c, cls in enumerate(("cats", "dogs")):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(n):
                (tmp_path / "imgs" / split / cls / f"{i}.png").write_bytes(_png(40 + 100 * c + i, side=10 + i))
    data = load_dataset(str(tmp_path / "imgs"), image_size=8)
    assert data.class_names == ["cats", "dogs"] and data.train_x.shape == (12, 1, 8, 8) and data.test_x.shape == (4, 1, 8, 8)
    with tarfile.open(tmp_path / "imgs.tar", "w") as tar:
        tar.add(tmp_path / "imgs", arcname=".")
    assert len(load_dataset(str(tmp_path / "imgs.tar"), image_size=8).train_y) == 12
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "b").mkdir(parents=True)
    (tmp_path / "empty" / "train" / "a" / "x.png").write_bytes(_png(5))
    (tmp_path / "empty" / "train" / "b" / "y.png").write_text("not an image")
    with pytest.raises(ValueError, match="the class folder train/b has no readable image"):
        load_dataset(str(tmp_path / "empty"))


def test_batchal_run_on_your_own_data_and_a_changed_file_is_refused(tmp_path, capsys):
    x, y = blobs()
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    assert main(["run", "--dataset", str(tmp_path / "mine.npz"), "--out", str(tmp_path / "runs"), "--model", "mlp", *RUN]) == 0
    run_dir = tmp_path / "runs" / "mine-npz" / "random-b5-seed0"
    assert (run_dir / "data.json").is_file() and (run_dir / "results.jsonl").is_file()
    assert not (tmp_path / "mine.npz" / "random-b5-seed0").exists()
    x2 = x.copy()
    x2[0, 0] += 1.0
    np.savez(tmp_path / "mine.npz", x=x2, y=y)
    config = ExperimentConfig(dataset=str(tmp_path / "mine.npz"), strategy="random", acquisition_size=5, initial_size=10, budget=25,
                              mc_samples=2, model="mlp", train={"max_epochs": 1, "epoch_samples": 64})
    with pytest.raises(RunFileError, match="was run on other data \\(sha256 differ"):
        run_experiment(config, run_dir)
    assert main(["run", "--dataset", str(tmp_path / "nothing.npz"), "--out", str(tmp_path / "r2"), *RUN]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_your_own_model_factory_in_run(tmp_path, monkeypatch):
    x, y = blobs()
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "calls = []\n"
        "def make(input_shape, num_classes):\n"
        "    calls.append((tuple(input_shape), num_classes))\n"
        "    return nn.Sequential(nn.Linear(input_shape[0], 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dataset", "mine.npz", "--out", "runs", "--model", "nets.py:make", *RUN]) == 0
    import json

    config = json.loads((tmp_path / "runs" / "mine-npz" / "random-b5-seed0" / "config.json").read_text())
    assert config["model"] == f"{tmp_path / 'nets.py'}:make"  # stored absolutely: a resume from elsewhere finds it
    assert main(["run", "--dataset", "mine.npz", "--out", "runs2", "--model", "nets.py:nothing", *RUN]) == 2


def test_outputs_name_items_by_the_data_sets_own_ids(tmp_path):
    """Every source's training items carry their own ids (a table's row number, a file's path, a
    tar's member name), and run rows name acquired items by them: each id leads back to an item
    with the acquired label."""
    pytest.importorskip("PIL")
    x, y = blobs(60)
    header = ",".join(f"f{i}" for i in range(5)) + ",kind\n"
    (tmp_path / "t.csv").write_text(header + "".join(",".join(f"{v:.4f}" for v in row) + f",{'abc'[c]}\n" for row, c in zip(x, y)))
    data = load_dataset(str(tmp_path / "t.csv"), label_column="kind")
    assert sorted(data.train_ids) != list(range(len(data.train_ids)))  # the split shuffled: ids are not positions
    assert all(data.class_names[int(data.train_y[n])] == "abc"[y[row]] for n, row in enumerate(data.train_ids))
    np.savez(tmp_path / "n.npz", x=x, y=y)
    npz = load_dataset(str(tmp_path / "n.npz"))
    assert all(np.allclose(npz.train_x[n].numpy(), x[row]) for n, row in enumerate(npz.train_ids))
    for c, cls in enumerate(("cats", "dogs")):
        (tmp_path / "imgs" / "train" / cls).mkdir(parents=True)
        for i in range(6):
            (tmp_path / "imgs" / "train" / cls / f"{i}.png").write_bytes(_png(40 + 100 * c + i))
    folder = load_dataset(str(tmp_path / "imgs"), image_size=8)  # no test/: a stated split
    assert all(path.split("/")[1] == folder.class_names[int(folder.train_y[n])] for n, path in enumerate(folder.train_ids))
    assert all((tmp_path / "imgs" / path).is_file() for path in folder.train_ids)
    assert main(["run", "--dataset", str(tmp_path / "t.csv"), "--label-column", "kind", "--out", str(tmp_path / "runs"),
                 "--model", "mlp", *RUN]) == 0
    import json

    rows = [json.loads(line) for line in (tmp_path / "runs" / "t-csv" / "random-b5-seed0" / "results.jsonl").read_text().splitlines()]
    acquired = [(i, label) for row in rows for i, label in zip(row.get("acquired_ids", []), row["acquired_labels"])]
    assert len(acquired) == 10 and all("abc"[y[row]] == data.class_names[label] for row, label in acquired)
