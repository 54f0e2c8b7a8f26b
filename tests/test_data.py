"""Data loaders: the reference files, IDX parsing, corruption, downloads from a local server."""

import functools
import gzip
import http.server
import shutil
import struct
import threading

import numpy as np
import pytest
import torch

from batchal.data import DataError, available_locally, load_dataset, repeat_with_noise
from batchal.data.files import cache_dir

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("BATCHAL_DATA", raising=False)
    monkeypatch.delenv("BATCHAL_MIRROR", raising=False)
    monkeypatch.setenv("BATCHAL_OFFLINE", "1")


def test_mnist_from_shared_data(shared_data_dir):
    data = load_dataset("mnist", shared_data_dir)
    assert data.train_x.shape == (60000, 1, 28, 28) and data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_y.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert data.test_y.bincount().tolist() == MNIST_TEST_COUNTS
    # Normalised with the train set's pixel mean and std (0.1307, 0.3081).
    assert abs(float(data.train_x.mean())) < 1e-3 and abs(float(data.train_x.std()) - 1) < 1e-3


def test_fashion_mnist_and_letter_from_shared_data(shared_data_dir):
    fashion = load_dataset("fashion-mnist", shared_data_dir)
    assert fashion.train_y.bincount().tolist() == [6000] * 10 and fashion.test_y.bincount().tolist() == [1000] * 10
    letter = load_dataset("letter", shared_data_dir)
    assert letter.train_x.shape == (16000, 16) and letter.test_x.shape == (4000, 16)
    assert letter.num_classes == 26 and letter.train_y.bincount().numel() == 26
    assert available_locally(shared_data_dir)["mnist"] == str(shared_data_dir / "mnist")


def test_data_dir_from_environment(shared_data_dir, monkeypatch):
    monkeypatch.setenv("BATCHAL_DATA", str(shared_data_dir))
    assert load_dataset("letter").train_y.shape == (16000,)


def test_digits_needs_no_files():
    data = load_dataset("digits")
    assert data.train_x.shape[1:] == (1, 8, 8) and len(data.train_y) + len(data.test_y) == 1797
    assert data.num_classes == 10


def test_repeated_variant_copies_with_fixed_noise_and_clean_test():
    base = load_dataset("digits")
    rep = load_dataset("repeated-digits")
    n = len(base.train_y)
    assert rep.train_x.shape[0] == 3 * n
    assert torch.equal(rep.train_y, base.train_y.repeat(3))
    assert torch.equal(rep.test_x, base.test_x)
    noise = [rep.train_x[i * n : (i + 1) * n] - base.train_x for i in range(3)]
    for a in noise:
        assert float(a.std()) == pytest.approx(0.1, rel=0.05)
    assert not torch.allclose(noise[0], noise[1])
    assert torch.equal(load_dataset("repeated-digits").train_x, rep.train_x)  # fixed per copy
    assert repeat_with_noise(base, copies=5).train_x.shape[0] == 5 * n


def write_idx(path, array: np.ndarray, gz: bool):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def fake_emnist(root, gz=True, n_train=47 * 2, n_test=47):
    folder = root / "emnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for part, n in (("train", n_train), ("test", n_test)):
        img = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        lab = (np.arange(n) % 47).astype(np.uint8)
        write_idx(folder / f"emnist-balanced-{part}-images-idx3-ubyte", img, gz)
        write_idx(folder / f"emnist-balanced-{part}-labels-idx1-ubyte", lab, gz)
        images[part] = (img, lab)
    return images


@pytest.mark.parametrize("gz", [True, False])
def test_emnist_loader_on_small_idx_files(tmp_path, gz):
    written = fake_emnist(tmp_path, gz=gz)
    data = load_dataset("emnist-balanced", tmp_path, verify_files=False)
    assert data.num_classes == 47 and data.class_names[10] == "A" and data.class_names[-1] == "t"
    assert data.train_x.shape == (94, 1, 28, 28) and data.test_x.shape == (47, 1, 28, 28)
    assert data.train_y.tolist() == written["train"][1].tolist()
    # EMNIST stores images transposed; the loader turns them upright.
    raw = written["train"][0][5].astype(np.float32) / 255
    restored = data.train_x[5, 0].numpy() * 0.3332 + 0.1751
    assert np.allclose(restored, raw.T, atol=1e-5)
    assert load_dataset("repeated-emnist-balanced", tmp_path, verify_files=False).train_x.shape[0] == 3 * 94


def test_emnist_published_checksum_is_checked(tmp_path):
    fake_emnist(tmp_path, gz=True)
    with pytest.raises(DataError, match="published checksum"):
        load_dataset("emnist-balanced", tmp_path)


def test_truncated_idx_gives_a_clear_error(tmp_path):
    fake_emnist(tmp_path, gz=False)
    path = tmp_path / "emnist" / "emnist-balanced-train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("emnist-balanced", tmp_path, verify_files=False)


def test_truncated_gzip_gives_a_clear_error(tmp_path, shared_data_dir):
    folder = tmp_path / "mnist"
    shutil.copytree(shared_data_dir / "mnist", folder)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:200])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("mnist", tmp_path)


def test_corrupted_file_fails_its_checksum(tmp_path, shared_data_dir):
    folder = tmp_path / "letter"
    folder.mkdir()
    text = (shared_data_dir / "letter" / "letter-recognition.data").read_text()
    (folder / "letter-recognition.data").write_text(text.replace("T,2,8", "T,3,8", 1))
    with pytest.raises(DataError, match="does not match its checksum"):
        load_dataset("letter", tmp_path)


def test_missing_offline_says_which_files_go_where(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "nowhere" / "fashion-mnist") in message and str(cache_dir() / "fashion-mnist") in message


@pytest.fixture
def local_server():
    """An HTTP server on 127.0.0.1 serving a folder; yields (set_folder, base_url)."""
    state = {"dir": None}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=state["dir"], **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (lambda d: state.__setitem__("dir", str(d))), f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_from_a_local_server_then_cached(shared_data_dir, local_server, monkeypatch, tmp_path):
    set_dir, url = local_server
    set_dir(shared_data_dir)
    monkeypatch.setenv("BATCHAL_OFFLINE", "0")
    monkeypatch.setenv("BATCHAL_MIRROR", url)
    seen = []
    progress = lambda desc, total: (lambda n: seen.append((desc, n)))
    letter = load_dataset("letter", tmp_path / "empty", progress=progress)
    mnist = load_dataset("mnist", tmp_path / "empty", progress=progress)
    assert letter.train_x.shape == (16000, 16) and mnist.train_y.bincount().tolist() == MNIST_TRAIN_COUNTS
    assert (cache_dir() / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert any("letter-recognition.data" in d for d, _ in seen)
    # Cached now: found again with the server gone and downloads off.
    monkeypatch.setenv("BATCHAL_OFFLINE", "1")
    set_dir(tmp_path / "empty")
    assert load_dataset("letter").train_y.shape == (16000,)


def test_download_of_a_bad_file_is_rejected_and_removed(shared_data_dir, local_server, monkeypatch, tmp_path):
    bad = tmp_path / "served" / "letter"
    bad.mkdir(parents=True)
    (bad / "letter-recognition.data").write_text("A,1,2\n")
    set_dir, url = local_server
    set_dir(tmp_path / "served")
    monkeypatch.setenv("BATCHAL_OFFLINE", "0")
    monkeypatch.setenv("BATCHAL_MIRROR", url)
    with pytest.raises(DataError, match="checksum"):
        load_dataset("letter", tmp_path / "empty")
    assert not (cache_dir() / "letter" / "letter-recognition.data").exists()


def test_download_failure_is_reported(local_server, monkeypatch, tmp_path):
    set_dir, url = local_server
    set_dir(tmp_path)  # serves nothing useful: 404s
    monkeypatch.setenv("BATCHAL_OFFLINE", "0")
    monkeypatch.setenv("BATCHAL_MIRROR", url)
    with pytest.raises(DataError, match="download failed"):
        load_dataset("letter", tmp_path / "empty")


def test_unknown_dataset_refused():
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("cifar-10")


def test_datasets_command_verifies_checksums(tmp_path, shared_data_dir, capsys, monkeypatch):
    from batchal.cli import main

    monkeypatch.delenv("BATCHAL_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "letter"
    folder.mkdir()
    text = (shared_data_dir / "letter" / "letter-recognition.data").read_text()
    (folder / "letter-recognition.data").write_text(text.replace("T,2,8", "T,3,8", 1))
    status = available_locally(tmp_path)
    assert status["letter"].startswith("corrupt:") and "does not match its checksum" in status["letter"]
    assert status["mnist"].startswith("missing")
    assert main(["datasets", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "letter" in out and "corrupt:" in out
    assert available_locally(shared_data_dir)["letter"] == str(shared_data_dir / "letter")


def test_the_stated_sizes_are_the_loaded_ones(shared_data_dir):
    """batchal datasets and the site's table state SIZES; every data set whose files are here matches them."""
    from batchal.data.datasets import SIZES, available_locally, dataset_names, load_dataset

    assert set(SIZES) == set(dataset_names())
    status = available_locally(shared_data_dir, check=False)
    checked = 0
    for name, (train, test, classes, _) in SIZES.items():
        base = name.removeprefix("repeated-")
        if status[base].startswith(("missing", "corrupt")):
            continue
        data = load_dataset(name, shared_data_dir)
        assert (len(data.train_y), len(data.test_y), data.num_classes) == (train, test, classes), name
        checked += 1
    assert checked >= 8  # all but EMNIST, which is not on this machine
