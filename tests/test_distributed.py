"""Pools that stream, ``batchal score`` / ``select`` in-process (the oracle) and on a local
multi-node Ray cluster (``ray.cluster_utils.Cluster`` on 127.0.0.1), and studies as Ray tasks.

Tolerance: scores are compared exactly (the same shards are scored with the same masks whatever
the worker); across different shard or forward-batch sizes, to 1e-5 (float32 forward passes
batched differently round differently)."""

import importlib.util
import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch

import batchal

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from batchal.cli import main  # noqa: E402
from batchal.data.pools import ImageOptions, open_pool  # noqa: E402
from batchal.distributed.scoring import ScoreJob, score_pool, shard_name  # noqa: E402
from batchal.distributed.selection import select_scored, sharded_strategies  # noqa: E402

STRATEGIES = sharded_strategies()
from batchal.models import load_model  # noqa: E402

MODEL_SOURCE = '''
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 5))
'''
N = 1200


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    (root / "model.py").write_text(MODEL_SOURCE)
    np.save(root / "pool.npy", np.random.default_rng(0).standard_normal((N, 1, 4, 4)).astype(np.float32))
    return root


def job(workdir, **kw):
    defaults = dict(pool=str(workdir / "pool.npy"), model=f"{workdir / 'model.py'}:make", mc_samples=6, seed=3,
                    embeddings=True, keep_log_probs=150, shard_size=250)
    return ScoreJob(**{**defaults, **kw})


@pytest.fixture(scope="module")
def scored(workdir):
    out = workdir / "scored"
    score_pool(job(workdir), out)
    return out


def tables(folder, shards):
    return [pq.read_table(folder / "scores" / shard_name(s)) for s in range(shards)]


def oracle(workdir):
    """The single-process inputs: the whole pool through the library's own prediction functions."""
    model = load_model(f"{workdir / 'model.py'}:make", (1, 4, 4))
    x = torch.from_numpy(np.load(workdir / "pool.npy"))
    log_probs = batchal.predict_log_probs(model, x, 6, 256, seed=3)
    embeddings, prediction = batchal.predict_embeddings(model, x)
    return log_probs, embeddings, prediction


# --- pools -----------------------------------------------------------------------------------


def test_every_pool_kind_gives_stable_ids_and_reads_only_ranges(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    for i in range(7):
        folder = images / ("b" if i % 2 else "a") / "deep"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (9, 6, 3), dtype=np.uint8)).save(folder / f"{i}.{'png' if i % 3 else 'jpg'}")
    (images / "notes.txt").write_text("not an image")
    pool = open_pool(images, options=ImageOptions(image_size=8, grayscale=False))
    assert len(pool) == 7 and pool.ids(0, 7) == sorted(pool.ids(0, 7)) and pool.ids(0, 1) == ["a/deep/0.jpg"]
    assert pool.read(2, 5).shape == (3, 3, 8, 8)

    arrays = rng.standard_normal((10, 12)).astype(np.float32)
    pq.write_table(pa.table({"x": list(arrays[:6])}), tmp_path / "p1.parquet")
    pq.write_table(pa.table({"x": list(arrays[6:])}), tmp_path / "p2.parquet", row_group_size=2)
    (tmp_path / "par").mkdir()
    shutil.move(tmp_path / "p1.parquet", tmp_path / "par" / "p1.parquet")
    shutil.move(tmp_path / "p2.parquet", tmp_path / "par" / "p2.parquet")
    pool = open_pool(tmp_path / "par", input_shape=(3, 4))
    assert len(pool) == 10 and pool.ids(4, 8) == ["4", "5", "6", "7"]
    assert torch.equal(pool.read(4, 9), torch.from_numpy(arrays[4:9]).view(5, 3, 4))

    paths = [f"images/{p}" for p in open_pool(images).ids(0, 7)]
    pq.write_table(pa.table({"path": paths, "other": list(range(7))}), tmp_path / "paths.parquet")
    with pytest.raises(ValueError, match="name the one holding the inputs with --column"):
        open_pool(tmp_path / "paths.parquet")
    pool = open_pool(tmp_path / "paths.parquet", column="path", options=ImageOptions(8, True))
    assert pool.ids(0, 7) == paths and pool.read(0, 7).shape == (7, 1, 8, 8)

    np.save(tmp_path / "x.npy", arrays)
    pool = open_pool(tmp_path / "x.npy")
    assert len(pool) == 10 and torch.equal(pool.read(3, 5), torch.from_numpy(arrays[3:5]))
    with pytest.raises(ValueError, match="no such file"):
        open_pool(tmp_path / "missing.npy")


# --- in-process scoring and selection: the oracle --------------------------------------------


def test_scores_equal_the_whole_pool_scored_at_once_and_every_id_once(workdir, scored):
    log_probs, embeddings, prediction = oracle(workdir)
    table = pa.concat_tables(tables(scored, 5))
    assert table.column("position").to_pylist() == list(range(N))
    assert table.column("id").to_pylist() == [str(i) for i in range(N)]  # every id exactly once, in order
    for name, fn in batchal.scores.SCORE_FUNCTIONS.items():
        assert np.allclose(table.column(name).to_numpy(), fn(log_probs).numpy(), atol=1e-5), name
    emb = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(N, -1)
    assert np.allclose(emb, embeddings.numpy(), atol=1e-5)
    manifest = json.loads((scored / "manifest.json").read_text())
    assert manifest["complete"] and manifest["shards"] == 5 and manifest["kept"] == 150


def test_scores_do_not_depend_on_shard_or_batch_size(workdir, scored, tmp_path):
    score_pool(job(workdir, shard_size=97, batch_size=13), tmp_path / "other")
    a = pa.concat_tables(tables(scored, 5))
    b = pa.concat_tables(tables(tmp_path / "other", 13))
    for name in batchal.scores.SCORE_FUNCTIONS:
        assert np.allclose(a.column(name).to_numpy(), b.column(name).to_numpy(), atol=1e-5)
    assert pq.read_table(tmp_path / "other" / "log_probs.parquet").column("position").equals(
        pq.read_table(scored / "log_probs.parquet").column("position"))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_picks_equal_single_process_select(workdir, scored, strategy):
    log_probs, embeddings, prediction = oracle(workdir)
    inputs = {"log_probs_N_K_C": log_probs}
    if strategy == "badge":
        inputs = {"log_probs_N_K_C": prediction, "embeddings_N_D": embeddings}
    elif strategy == "coreset":
        inputs = {"embeddings_N_D": embeddings}
    elif strategy == "batchbald":
        inputs["prefilter"] = 150
    reference = batchal.select(strategy, 12, seed=4, **inputs)
    picks = select_scored(scored, strategy, 12, seed=4)["picks"]
    assert [p["position"] for p in picks] == reference.indices.tolist()
    assert np.allclose([p["score"] for p in picks], reference.scores.numpy(), rtol=1e-6, atol=1e-9)
    assert [p["id"] for p in picks] == [str(p["position"]) for p in picks]


def test_a_killed_job_resumes_from_its_finished_shards(workdir, scored, tmp_path):
    out = tmp_path / "killed"
    seen = []

    def die_after_two(done, total, items):
        seen.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_pool(job(workdir), out, progress=die_after_two)
    assert sorted(p.name for p in (out / "scores").iterdir()) == [shard_name(0), shard_name(1)]
    before = (out / "scores" / shard_name(0)).stat().st_mtime_ns
    progress = []
    score_pool(job(workdir), out, progress=lambda d, t, i: progress.append(d))
    assert progress[0] == 2  # started from the two finished shards
    assert (out / "scores" / shard_name(0)).stat().st_mtime_ns == before  # not rescored
    for a, b in zip(tables(out, 5), tables(scored, 5)):
        assert a.equals(b)
    assert pq.read_table(out / "log_probs.parquet").equals(pq.read_table(scored / "log_probs.parquet"))


def test_other_jobs_and_unfinished_folders_are_refused(workdir, scored, tmp_path):
    with pytest.raises(ValueError, match="holds scores of another job .*mc_samples"):
        score_pool(job(workdir, mc_samples=7), scored)
    (tmp_path / "half").mkdir()
    score_pool(job(workdir), tmp_path / "half")
    manifest = json.loads((tmp_path / "half" / "manifest.json").read_text())
    (tmp_path / "half" / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ValueError, match="scoring is not complete"):
        select_scored(tmp_path / "half", "bald", 3)
    with pytest.raises(ValueError, match="batch_size=5000 is larger than the pool"):
        select_scored(scored, "bald", 5000)
    no_embeddings = tmp_path / "plain"
    score_pool(job(workdir, embeddings=False, keep_log_probs=None), no_embeddings)
    with pytest.raises(ValueError, match="score with --embeddings"):
        select_scored(no_embeddings, "badge", 3)
    with pytest.raises(ValueError, match="score with --keep-log-probs"):
        select_scored(no_embeddings, "batchbald", 3)


def test_score_and_select_commands(workdir, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["score", str(workdir / "pool.npy"), "--model", f"{workdir / 'model.py'}:make", "--mc-samples", "6", "--seed", "3",
                 "--out", str(out), "--shard-size", "400", "--keep-log-probs", "50"]) == 0
    assert "scored 3/3 shards, 1200 items" in capsys.readouterr().out
    assert main(["select", str(out), "--strategy", "batchbald", "--batch-size", "4", "-o", str(tmp_path / "picks.json")]) == 0
    picks = json.loads((tmp_path / "picks.json").read_text())
    assert [p["rank"] for p in picks["picks"]] == [0, 1, 2, 3] and picks["strategy"] == "batchbald"
    for argv, message in [
        (["score", str(workdir / "pool.npy"), "--model", "nope", "--out", str(tmp_path / "x")], "--model must be a registered model"),
        (["score", str(workdir / "pool.npy"), "--model", "mlp", "--out", str(tmp_path / "x")], "needs the number of classes"),
        (["score", str(workdir / "pool.npy"), "--model", f"{workdir / 'model.py'}:make", "--weights", str(workdir / "pool.npy"),
          "--out", str(tmp_path / "x")], "--weights"),
        (["score", str(workdir / "pool.npy"), "--model", f"{workdir / 'model.py'}:make", "--out", str(tmp_path / "x"), "--ray", "127.0.0.1:9"],
         # Where the ray extra is missing (the GPU machine had none) the error names the extra instead.
         "cannot reach a Ray cluster" if importlib.util.find_spec("ray") else "needs the ray extra"),
        (["select", str(out), "--strategy", "kdpp", "--batch-size", "2"], "--strategy must be one of"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()  # nothing written before the job was known to be valid


# --- on a local multi-node Ray cluster ---------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1), c.add_node(num_cpus=1)]
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    yield c, workers
    ray.shutdown()
    c.shutdown()


def test_ray_scores_equal_in_process_and_survive_a_lost_node(workdir, scored, cluster, tmp_path):
    c, workers = cluster
    out = tmp_path / "ray"
    done = []
    thread = threading.Thread(target=lambda: done.append(score_pool(job(workdir, shard_size=60), out, ray_address=c.address, workers=3)))
    thread.start()
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "scores").glob("*.parquet")) if (out / "scores").exists() else []) < 2:
        time.sleep(0.05)
    c.remove_node(workers[1])  # a worker node lost mid-job
    workers[1] = None
    thread.join(timeout=300)
    assert done and done[0]["complete"], "the job must finish on the remaining nodes"
    in_process = tmp_path / "in-process"
    score_pool(job(workdir, shard_size=60), in_process)
    for s in range(20):
        assert pq.read_table(out / "scores" / shard_name(s)).equals(pq.read_table(in_process / "scores" / shard_name(s))), s
    assert pq.read_table(out / "log_probs.parquet").equals(pq.read_table(in_process / "log_probs.parquet"))


@pytest.mark.parametrize("strategy", ["bald", "power_bald", "badge", "coreset", "batchbald"])
def test_ray_picks_equal_single_process_picks(scored, cluster, strategy):
    c, _ = cluster
    assert select_scored(scored, strategy, 10, seed=2, ray_address=c.address) == select_scored(scored, strategy, 10, seed=2)


def test_a_study_on_ray_writes_the_rows_of_a_run_without_ray(cluster, tmp_path, capsys):
    from test_experiment import fast_config, without_seconds

    from batchal.distributed.studies import run_study
    from batchal.experiment import run_experiment
    from batchal.run_files import read_results

    c, _ = cluster
    runs = {f"{s} seed {seed}": (fast_config(strategy=s, seed=seed), tmp_path / "ray" / f"{s}-{seed}") for s in ("bald", "random") for seed in (0, 1)}
    # A folder holding another configuration: that run fails, by name, and the others finish.
    (tmp_path / "ray" / "bald-1").mkdir(parents=True)
    run_experiment(fast_config(strategy="bald", seed=1, acquisition_size=3, budget=13), tmp_path / "ray" / "bald-1")
    outcomes = run_study(runs, c.address, cpus_per_run=1)
    assert "different configuration" in outcomes["bald seed 1"].error
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tasks (1 CPU each): float reductions then round alike
    try:
        alone = {name: run_experiment(config, tmp_path / "alone" / name.replace(" ", "-")) for name, (config, _) in runs.items() if name != "bald seed 1"}
    finally:
        torch.set_num_threads(threads)
    for name, (config, folder) in runs.items():
        if name == "bald seed 1":
            continue
        alone_rows = alone[name]
        assert outcomes[name].error is None
        assert without_seconds(read_results(folder / "results.jsonl")) == without_seconds(alone_rows)
        assert json.loads((folder / "config.json").read_text()) == json.loads((tmp_path / "alone" / name.replace(" ", "-") / "config.json").read_text())


def test_run_command_on_ray_prints_each_run_and_the_table(cluster, tmp_path, capsys):
    from test_cli import SMALL

    c, _ = cluster
    assert main(["run", *SMALL, "--strategy", "random,bald", "--ray", c.address, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "running 2 runs on Ray" in out and "random seed 0: done, 20 labels" in out and "bald seed 0: done" in out
    assert "| random | 1 | 20 |" in out and "| bald | 1 | 20 |" in out
    assert (tmp_path / "digits" / "bald-b5-seed0" / "results.jsonl").is_file()


def test_compare_on_ray_equals_compare_in_one_process(cluster, tmp_path, capsys):
    c, _ = cluster
    argv = ["compare", "digits", "--strategy", "margin", "--seeds", "0,1", "--budget", "30", "--batch-size", "5", "--mc-samples", "4",
            "--max-epochs", "2", "--epoch-samples", "128"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tasks (1 CPU each): the full-pool models here, the runs in one process
    try:
        assert main([*argv, "--ray", c.address, "--out", str(tmp_path / "ray")]) == 0
        assert "margin b=5 seed 1: done" in capsys.readouterr().out
        assert main([*argv, "--out", str(tmp_path / "alone")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "ray" / "compare.json").read_text()) == json.loads((tmp_path / "alone" / "compare.json").read_text())


def test_import_batchal_never_imports_ray():
    import subprocess
    import sys

    code = "import sys, batchal, batchal.cli, batchal.distributed.scoring, batchal.distributed.selection; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_paths_are_resolved_on_the_driver_and_weights_compared_by_content(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text("")
    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")
    a = ScoreJob(pool="pool", model="net.py:make", weights="model.pt", mc_samples=2, seed=0)
    assert a.pool == str(tmp_path / "pool") and a.weights == str(tmp_path / "model.pt") and a.model == f"{tmp_path / 'net.py'}:make"
    import shutil

    shutil.copy(tmp_path / "model.pt", tmp_path / "copy.pt")
    b = ScoreJob(pool="./pool", model="./net.py:make", weights="./copy.pt", mc_samples=2, seed=0)
    assert a.identity() == b.identity()  # the same weights by another name: the same job


def _png_with_bad_pixels(path):
    """A PNG (saved under ``path``) whose chunks and CRCs are valid but whose pixel data are not zlib."""
    import io
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(buffer, format="PNG")
    data, out, at = buffer.getvalue(), bytearray(buffer.getvalue()[:8]), 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        if kind == b"IDAT":
            body = b"\x00" * length
        out += struct.pack(">I", length) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        at += 12 + length
    path.write_bytes(bytes(out))


def test_a_corrupt_image_on_ray_is_one_line(cluster, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(24):
        Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(images / f"{i:03d}.png")
    (images / "005.png").write_bytes(b"not a png at all")  # fails to open: skipped and listed before scoring
    _png_with_bad_pixels(images / "013.jpg")  # its header and checksums are fine: it fails only when decoded, mid-job
    c, _ = cluster
    with pytest.raises(ValueError) as info:
        score_pool(ScoreJob(pool=str(images), model="mlp", num_classes=3, image_size=8, mc_samples=2, seed=0, shard_size=6),
                   tmp_path / "out", ray_address=c.address, workers=2)
    message = str(info.value)
    assert "013.jpg: not a readable image" in message and "run the same command again to resume" in message
    assert "\n" not in message
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [entry["id"] for entry in manifest["skipped"]] == ["005.png"]


def test_unreadable_images_are_skipped_and_listed_when_scoring(tmp_path, capsys):
    from PIL import Image

    from batchal.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i in range(12):
        Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(images / f"{i:03d}.png")
    (images / "004.png").write_bytes(b"\x89PNG truncated")
    (images / "009.png").write_text("a text file")
    assert main(["score", str(images), "--model", "mlp", "--num-classes", "3", "--image-size", "8", "--mc-samples", "2",
                 "--out", str(tmp_path / "out"), "--shard-size", "5"]) == 0
    out = capsys.readouterr().out
    assert "10 items scored" in out and "2 unreadable image(s) skipped: 004.png, 009.png" in out
    ids = pq.read_table(tmp_path / "out" / "scores" / shard_name(0)).column("id").to_pylist()
    assert "004.png" not in ids and ids[:4] == ["000.png", "001.png", "002.png", "003.png"]
    # A resumed job keeps the pool it started with.
    assert main(["score", str(images), "--model", "mlp", "--num-classes", "3", "--image-size", "8", "--mc-samples", "2",
                 "--out", str(tmp_path / "out"), "--shard-size", "5"]) == 0


def test_parquet_reads_slices_of_one_big_row_group_and_names_a_bad_row(tmp_path, monkeypatch):
    import pyarrow as pa

    from batchal.data import pools
    from batchal.data.files import DataError
    from batchal.data.pools import open_pool

    rows = [[float(i)] * 4 for i in range(1000)]
    pq.write_table(pa.table({"x": rows}), tmp_path / "one.parquet")  # written the usual way: one row group
    assert pq.ParquetFile(tmp_path / "one.parquet").num_row_groups == 1
    monkeypatch.setattr(pools, "BATCH_ROWS", 100)
    pool = open_pool(tmp_path / "one.parquet", column="x")
    decoded = []
    real = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for batch in real(self, *args, **kwargs):
            decoded.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    x = pool.read(150, 250)
    assert x[:, 0].tolist() == [float(i) for i in range(150, 250)]
    assert sum(decoded) <= 300 and max(decoded) <= 100  # up to the slice's end, 100 rows at a time; never the whole group
    bad = rows[:5] + [[1.0, 2.0]] + rows[6:10]
    pq.write_table(pa.table({"x": bad}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad.parquet, row 5 \(pool position 5\): column 'x' has 2 values; expected 4"):
        open_pool(tmp_path / "bad.parquet", column="x").read(0, 10)
