"""The loop API for your own training code: your ids in and out, state saved and resumed."""

import pytest
import torch
from torch import nn

import batchal
from batchal.loop import ActiveLoop


def data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return torch.randn(n, 4, generator=g) + torch.eye(3, 4)[y] * 2, y


def model():
    torch.manual_seed(0)
    return batchal.convert_dropout(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)))


def train(net, x, y):
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def test_query_speaks_your_ids_teach_records_and_a_restart_resumes(tmp_path):
    x, y = data()
    ids = [f"doc-{i:03d}" for i in range(len(x))]
    truth = dict(zip(ids, y.tolist()))
    net = model()
    loop = ActiveLoop(ids, x, strategy="batchbald", mc_samples=8, state_file=tmp_path / "state.json")
    loop.teach(ids[:6], [truth[i] for i in ids[:6]])
    picked = []
    for _ in range(3):
        labelled_ids, labels = loop.labelled()
        train(net, x[[ids.index(i) for i in labelled_ids]], torch.tensor(labels))
        batch = loop.query(net, 5)
        assert len(set(batch)) == 5 and all(i in ids and i not in labelled_ids for i in batch)
        loop.teach(batch, [truth[i] for i in batch])
        picked += batch
    assert len(loop.labelled()[0]) == 6 + 15
    again = ActiveLoop(ids, x, strategy="batchbald", mc_samples=8, state_file=tmp_path / "state.json")
    assert again.labelled() == loop.labelled() and again.round == loop.round
    assert again.query(net, 5) == loop.query(net, 5)  # the same state and model: the same next batch
    with pytest.raises(ValueError, match="written by strategy 'batchbald', not 'badge'"):
        ActiveLoop(ids, x, strategy="badge", state_file=tmp_path / "state.json")
    with pytest.raises(ValueError, match="id 'nope' is not one of the loop's ids"):
        loop.teach(["nope"], [1])
    with pytest.raises(ValueError, match="inputs hold 120 items but 3 ids"):
        ActiveLoop(ids[:3], x)


def test_badge_through_the_loop():
    x, y = data()
    loop = ActiveLoop(list(range(len(x))), x, strategy="badge")
    loop.teach([0, 1, 2], [0, 1, 2])
    net = model()
    train(net, x[:3], y[:3])
    assert len(set(loop.query(net, 7))) == 7
