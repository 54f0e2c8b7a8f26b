"""A labelling project on feature rows (scikit-learn's digits and variants): 8 x 8 images written
for the items, the rows as the project's features, and each item's true label."""

import numpy as np
from PIL import Image

from batchal.labelling import Project, init_project
from batchal.training import TrainConfig


def features_project(tmp_path, x: np.ndarray, y: np.ndarray, train_config: TrainConfig, project_kwargs=None, **init_kwargs):
    """(project, {item id: its true label as a string}); ``init_kwargs`` go to ``init_project``
    (classes 0-9 and the features are given here), ``project_kwargs`` to ``Project``."""
    images = tmp_path / "images"
    images.mkdir()
    names = [f"d{i:04d}.png" for i in range(len(x))]  # sorted order = feature row order
    for name, row in zip(names, x):
        Image.fromarray((np.clip(row, 0, 1).reshape(8, 8) * 255).astype(np.uint8)).save(images / name)
    np.save(tmp_path / "features.npy", x)
    init_project(tmp_path / "proj", images, [str(d) for d in range(10)], features=tmp_path / "features.npy", **init_kwargs)
    project = Project(tmp_path / "proj", train_config=train_config, **(project_kwargs or {}))
    row = {name: n for n, name in enumerate(names)}
    truth = {item: str(y[row[project.store.item_path(item)]]) for item in project.features()[0]}
    return project, truth
