"""batchal.labelling.background: the service trains while the person labels and never makes the
next batch wait for a training on the last labels."""

import threading

import pytest

pytest.importorskip("PIL")
from test_labelling import CLASSES, write_images  # noqa: E402

from batchal.labelling import Project, init_project  # noqa: E402
from batchal.labelling.background import BackgroundTrainer  # noqa: E402
from batchal.training import TrainConfig  # noqa: E402

FAST = TrainConfig(epoch_samples=64, max_epochs=2, patience=1)


def test_the_trainer_trains_the_newest_request_once_and_keeps_the_newest_result():
    gate, calls = threading.Event(), []

    def train(job):
        calls.append(job)
        gate.wait(10)
        return f"model of {job}"

    trainer = BackgroundTrainer(train)
    trainer.request("a", "a")
    while not calls:  # "a" has started
        threading.Event().wait(0.01)
    trainer.request("b", "b")  # arrive while "a" trains: only the newest is trained next
    trainer.request("c", "c")
    trainer.request("a", "a")  # "a" is training: not asked twice
    gate.set()
    assert trainer.wait(10)
    assert calls == ["a", "c"]  # "b" superseded before it started; "a" not trained twice
    assert trainer.newest() == ("c", "model of c") and trainer.ready("c") == "model of c" and trainer.ready("a") is None
    trainer.request("c", "c")  # its model is ready: nothing to train
    assert trainer.wait(1) and calls == ["a", "c"]


def test_the_next_batch_comes_from_the_newest_finished_model_at_once(tmp_path, monkeypatch):
    truth = write_images(tmp_path / "images", 60)
    init_project(tmp_path / "proj", tmp_path / "images", CLASSES, batch_size=5, mc_samples=4)
    project = Project(tmp_path / "proj", train_config=FAST, background=True)
    name_of = project.store.item_paths()
    for item in project.current_batch()[1]:
        project.add_label(item, truth[name_of[item]])
    assert project.background.wait(60)  # trained on the first labels while "the person" labelled
    trained = len(project.store.current_labels())
    project.request_next()
    project.wait(60)
    assert project.state == "idle" and project.model_labels is not None and project.model_labels <= trained
    assert project.status()["model_labels"] == project.model_labels
    # Now the trainer is slow: labels of the new batch arrive, "next" does not wait for their model.
    gate = threading.Event()
    real = Project._train

    def slow(self, *args):
        gate.wait(30)
        return real(self, *args)

    monkeypatch.setattr(Project, "_train", slow)
    for item in project.current_batch()[1]:
        project.add_label(item, truth[name_of[item]])
    before = project.model_labels
    project.request_next()
    project.wait(20)
    assert project.state == "idle", "the next batch waited for the training of the last labels"
    assert project.model_labels == before  # chosen by the newest finished model, trained on fewer labels
    gate.set()
    assert project.background.wait(60)
    project.request_next()
    project.wait(60)
    assert project.model_labels > before  # the labels the stale model lacked are trained on now


def test_next_waits_a_bounded_time_for_the_training_under_way():
    import time

    gate = threading.Event()
    trainer = BackgroundTrainer(lambda job: (gate.wait(10), job)[1])
    trainer.offer("old", "old model")
    trainer.request("new", "new model")
    start = time.perf_counter()
    assert trainer.wait_for_running(0.3) == ("old", "old model")  # not done in time: the newest finished one
    assert 0.25 < time.perf_counter() - start < 5
    threading.Timer(0.1, gate.set).start()
    assert trainer.wait_for_running(5) == ("new", "new model")  # done in time: the fresher one


def test_close_stops_the_training_under_way_at_its_next_epoch_and_refuses_new_ones():
    from batchal.labelling.background import Stopped

    epochs, started = [], threading.Event()

    def train(job):
        for epoch in range(1000):
            started.set()
            trainer.check()  # the epoch hook
            epochs.append(epoch)
            threading.Event().wait(0.01)
        return "finished"

    trainer = BackgroundTrainer(train)
    trainer.request("a", "a")
    started.wait(5)
    trainer.close(5)
    assert not trainer.busy and trainer.newest() is None and len(epochs) < 1000  # stopped, not finished
    trainer.request("b", "b")
    assert not trainer.busy  # closed: nothing new starts
    with pytest.raises(Stopped):
        trainer.check()
