"""One batchal: the same trained model, pool, strategy and seed through every entry point give the
same ids in the same order.

The entry points: a runner round (``run_experiment``), ``ActiveLoop.query``, the labelling
service's next batch, the Label Studio backend, the Hugging Face Trainer query, ``batchal select``
over a scored folder with and without ``--ray local``, and (with its own kind of model) the
scikit-learn query. Training is replaced by one fixed trained model everywhere, so that what is
compared is the path from model and pool to batch. ``batchal select`` knows no labelled set (a
scored folder is all the pool there is): Coreset there is compared with the seam given none.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("PIL")
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import batchal.experiment as experiment  # noqa: E402
from batchal.acquire import ModelPredictions, acquire  # noqa: E402
from batchal.data.datasets import Dataset  # noqa: E402
from batchal.labelling import Project, init_project  # noqa: E402
from batchal.loop import ActiveLoop  # noqa: E402
from batchal.models import create_model  # noqa: E402
from batchal.training import TrainConfig, train_model  # noqa: E402

STRATEGIES = ["batchbald", "badge", "coreset", "random"]
CLASSES = [str(d) for d in range(10)]
N, B, K, SEED = 48, 4, 6, 3
LABELLED = list(range(10))  # items 0..9: digits 0..9, one of each class


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Images on disk, the inputs every entry point reads (the service's own decoding of them) and
    one trained model."""
    root = tmp_path_factory.mktemp("entry")
    digits = load_digits()
    (root / "images").mkdir()
    with open(root / "labels.csv", "w") as f:
        for i in range(N):
            name = f"{i:03d}.png"
            Image.fromarray((digits.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((20, 20)).save(root / "images" / name)
            if i in LABELLED:
                f.write(f"{name},{digits.target[i]}\n")
    init_project(root / "template", root / "images", CLASSES, model="mnist_cnn", strategy="random", batch_size=B, mc_samples=K,
                 labels=root / "labels.csv")
    ids, x = Project(root / "template").features()
    assert len(ids) == N  # the service's item ids, in the order of its inputs (image i is position i)
    y = torch.as_tensor(digits.target[:N])
    torch.manual_seed(0)
    model = create_model("mnist_cnn", tuple(x.shape[1:]), 10)
    train_model(model, x[LABELLED], y[LABELLED], None, None, TrainConfig(epoch_samples=64, max_epochs=3, patience=1),
                generator=torch.Generator().manual_seed(0))
    return {"root": root, "x": x.clone(), "y": y, "model": model, "position": {item: n for n, item in enumerate(ids)}}


POOL = [i for i in range(N) if i not in LABELLED]


def seam(world, strategy, labelled=LABELLED):
    """The picks of batchal.acquire on the pool (items 10..47), given the labelled set or not."""
    pool = POOL
    return acquire(strategy, ModelPredictions([world["model"]], world["x"]), pool, B, labelled=labelled, seed=SEED, round_=0,
                   mc_samples=K).picked


def runner(world, strategy, tmp_path, monkeypatch):
    """Round 0 of batchal run, its model replaced by the fixed one (built, never trained)."""
    monkeypatch.setattr(experiment, "build_model", lambda *a: world["model"])
    monkeypatch.setattr(experiment, "train_model", lambda *a, **k: [])
    data = Dataset("mine", world["x"], world["y"], world["x"][:4], world["y"][:4], CLASSES, True)
    config = experiment.ExperimentConfig(dataset="digits", strategy=strategy, seed=SEED, acquisition_size=B, initial_size=len(LABELLED),
                                         initial_indices=LABELLED, validation_size=0, budget=len(LABELLED) + B, mc_samples=K)
    rows = experiment.run_experiment(config, tmp_path / strategy, data=data)
    return rows[0]["acquired"]


def service(world, strategy, tmp_path, monkeypatch, through_label_studio=False):
    """The labelling service's first model batch (or the Label Studio backend's), its training replaced."""
    import shutil

    folder = tmp_path / f"proj-{strategy}-{through_label_studio}"
    shutil.copytree(world["root"] / "template", folder)
    project = Project(folder)
    project.meta["strategy"] = strategy
    project.meta["seed"] = SEED
    monkeypatch.setattr(Project, "_train", lambda self, ids, labels, x, position: (world["model"], lambda items: x[[position[i] for i in items]]))
    picked = []
    real_add = Project._add_batch
    monkeypatch.setattr(Project, "_add_batch", lambda self, strategy, picks, *a, **k: (picked.append(list(picks)), real_add(self, strategy, picks, *a, **k)))
    if through_label_studio:
        from batchal.integrations.label_studio import Backend

        Backend(project).next_batch()
    else:
        project.request_next()
    project.wait(60)
    assert project.state == "idle", project.error
    return [world["position"][item] for item in picked[-1]]  # item ids -> positions


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_runner_loop_service_and_label_studio_pick_what_the_seam_picks(world, strategy, tmp_path, monkeypatch):
    expected = seam(world, strategy)
    assert len(expected) == B and not set(expected) & set(LABELLED)
    assert runner(world, strategy, tmp_path, monkeypatch) == expected
    loop = ActiveLoop(list(range(N)), world["x"], strategy=strategy, mc_samples=K, seed=SEED)
    loop.labels = {str(i): int(world["y"][i]) for i in LABELLED}  # the labelled set, taught before round 0
    assert loop.query(world["model"], B) == expected
    assert service(world, strategy, tmp_path, monkeypatch) == expected
    assert service(world, strategy, tmp_path, monkeypatch, through_label_studio=True) == expected


def test_the_seam_is_not_indifferent_to_its_inputs(world):
    """The equalities above could not hold by accident: another seed or round moves the picks."""
    pool = POOL
    base = acquire("random", ModelPredictions([world["model"]], world["x"]), pool, B, seed=SEED).picked
    assert acquire("random", ModelPredictions([world["model"]], world["x"]), pool, B, seed=SEED, round_=1).picked != base
    coreset_unlabelled = seam(world, "coreset", labelled=[])
    assert coreset_unlabelled != seam(world, "coreset")  # Coreset's labelled centres are given where an entry point has them


class Wrapped(torch.nn.Module):
    """The fixed model behind a Hugging Face style forward (keyword inputs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_transformers_query_picks_what_the_seam_picks(world, strategy, tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer, TrainingArguments, default_data_collator

    from batchal.integrations.transformers import query

    pool = POOL
    rows = [{"pixel_values": world["x"][i]} for i in pool]
    trainer = Trainer(model=Wrapped(world["model"]), data_collator=default_data_collator,
                      args=TrainingArguments(output_dir=str(tmp_path / "t"), per_device_eval_batch_size=8, report_to=[], use_cpu=True))
    picks = query(trainer, rows, B, strategy=strategy, k=K, seed=SEED)
    # The query knows no labelled set: the seam without one.
    assert [pool[p] for p in picks] == seam(world, strategy, labelled=[])


def test_batchal_select_with_and_without_ray_picks_what_the_seam_picks(world, tmp_path):
    pytest.importorskip("pyarrow")
    from batchal.acquire import SEED_SCORE, SEED_SELECT, round_seed
    from batchal.distributed.scoring import ScoreJob, score_pool
    from batchal.distributed.selection import select_scored

    pool = POOL
    np.save(tmp_path / "pool.npy", world["x"][pool].numpy())
    torch.save(world["model"].state_dict(), tmp_path / "model.pt")
    job = ScoreJob(pool=str(tmp_path / "pool.npy"), model="mnist_cnn", num_classes=10, weights=str(tmp_path / "model.pt"),
                   mc_samples=K, seed=round_seed(SEED, 0, SEED_SCORE), embeddings=True, keep_log_probs=len(pool), shard_size=16)
    score_pool(job, tmp_path / "scored")
    select_seed = round_seed(SEED, 0, SEED_SELECT)
    for strategy in STRATEGIES:
        picks = select_scored(tmp_path / "scored", strategy, B, select_seed)["picks"]
        assert [pool[p["position"]] for p in picks] == seam(world, strategy, labelled=[]), strategy
    ray = pytest.importorskip("ray")
    try:
        for strategy in ("badge", "coreset"):  # the strategies --ray spreads over workers
            picks = select_scored(tmp_path / "scored", strategy, B, select_seed, ray_address="local")["picks"]
            assert [pool[p["position"]] for p in picks] == seam(world, strategy, labelled=[]), strategy
    finally:
        ray.shutdown()


def test_a_regression_runner_round_picks_what_the_seam_and_select_pick(tmp_path, monkeypatch):
    """regression_batchbald through batchal run's regression loop, the seam, and select on the means by hand."""
    import batchal
    import batchal.regression_run as regression
    from batchal.acquire import SEED_SCORE, SEED_SELECT, round_seed

    config = regression.RegressionConfig(dataset="diabetes", strategy="regression_batchbald", seed=SEED, initial_size=20,
                                         acquisition_size=B, budget=20 + B, mc_samples=K)
    x, y, _, _ = regression.load_regression("diabetes", SEED)
    labelled = torch.randperm(len(y), generator=torch.Generator().manual_seed(SEED))[:20].tolist()
    net, noise = regression._train(config, x[labelled], y[labelled], 0)
    monkeypatch.setattr(regression, "_train", lambda *a: (net, noise))
    rows = regression.run_regression(config, tmp_path / "run")
    pool = [i for i in range(len(y)) if i not in set(labelled)]
    by_seam = acquire("regression_batchbald", regression.RegressionPredictions(net, x, scale_over=pool), pool, B, labelled=labelled,
                      seed=SEED, mc_samples=K, protocol={"noise": noise}).picked
    means = regression._mc_means(net, x[pool], K, round_seed(SEED, 0, SEED_SCORE))
    by_hand = batchal.select("regression_batchbald", B, mean_N_K=means, noise=noise, seed=round_seed(SEED, 0, SEED_SELECT))
    assert rows[0]["acquired"] == by_seam == [pool[i] for i in by_hand.indices.tolist()]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_sklearn_query_picks_what_the_seam_picks_with_a_forest(strategy):
    from sklearn.ensemble import RandomForestClassifier

    from batchal.integrations.sklearn import EstimatorPredictions, query

    digits = load_digits()
    X, target = digits.data[:200], digits.target[:200]
    y = np.full(len(X), np.nan)
    y[:30] = target[:30]
    forest = RandomForestClassifier(n_estimators=8, random_state=0).fit(X[:30], target[:30])
    picks = query(forest, X, y, B, strategy=strategy, seed=SEED, round_=2)
    expected = acquire(strategy, EstimatorPredictions(forest, X), list(range(30, 200)), B, labelled=list(range(30)), seed=SEED,
                       round_=2).picked
    assert picks.tolist() == expected and all(p >= 30 for p in picks)
