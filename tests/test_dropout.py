"""Consistent MC dropout: masks fixed per acquisition, shared by every chunk, drawn per sample."""

import pytest
import torch
from torch import nn

import batchal
from batchal.bayesian.dropout import ConsistentMCDropout, ConsistentMCDropout2d, mc_dropout


class RowCounter(nn.Module):
    def __init__(self):
        super().__init__()
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return x


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        RowCounter(),
        nn.Conv2d(1, 4, 3),
        ConsistentMCDropout2d(0.5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16),
        ConsistentMCDropout(0.5),
        nn.ReLU(),
        nn.Linear(16, 3),
    )


X = torch.randn(23, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_masks_identical_across_pool_chunks():
    model = small_cnn()
    whole = batchal.predict_log_probs(model, X, k=6, batch_size=100, seed=3)
    chunked = batchal.predict_log_probs(model, X, k=6, batch_size=4, seed=3)
    assert whole.shape == (23, 6, 3)
    assert torch.allclose(whole, chunked, atol=1e-6)


def test_masks_differ_across_samples_and_seeds():
    model = small_cnn()
    lp = batchal.predict_log_probs(model, X, k=6, seed=3)
    assert not torch.allclose(lp[:, 0], lp[:, 1])
    assert not torch.allclose(lp, batchal.predict_log_probs(model, X, k=6, seed=4))


def test_each_sample_is_one_fixed_model():
    """Sample k equals the model run deterministically with mask k applied by hand."""
    model = nn.Sequential(nn.Linear(5, 8), ConsistentMCDropout(0.5), nn.Linear(8, 2))
    x = torch.randn(4, 5)
    with torch.no_grad(), mc_dropout(model, 3, seed=0):
        out = model(x).view(4, 3, 2)
        mask = model[1].mask(torch.Size([8]))
    for k in range(3):
        expected = model[2](model[0](x) * mask[k])
        assert torch.allclose(out[:, k], expected, atol=1e-6)
    assert set(mask.unique().tolist()) <= {0.0, 2.0}


def test_channelwise_mask_drops_whole_channels():
    layer = ConsistentMCDropout2d(0.5)
    with mc_dropout(nn.Sequential(layer), 5, seed=1):
        mask = layer.mask(torch.Size([8, 3, 3]))
    assert mask.shape == (5, 8, 1, 1)


def test_layers_before_the_first_dropout_run_once_per_input():
    model = small_cnn()
    batchal.predict_log_probs(model, X, k=10, batch_size=5, seed=0)
    assert model[0].rows == len(X)


def test_expand_input_mode_gives_the_same_predictions():
    model = small_cnn()
    a = batchal.predict_log_probs(model, X, k=4, seed=2)
    b = batchal.predict_log_probs(model, X, k=4, seed=2, expand_input=True)
    assert torch.allclose(a, b, atol=1e-6)
    assert model[0].rows == len(X) * (1 + 4)


def test_training_dropout_is_per_example():
    model = nn.Sequential(nn.Linear(4, 32), ConsistentMCDropout(0.5), nn.Linear(32, 2)).train()
    x = torch.randn(1, 4).repeat(8, 1)
    out = model(x)
    assert len({tuple(row.tolist()) for row in out}) > 1
    conv = ConsistentMCDropout2d(0.5).train()
    y = conv(torch.ones(6, 10, 2, 2))
    assert not torch.equal(y[0], y[1])
    assert all(len(set(y[i, c].flatten().tolist())) == 1 for i in range(6) for c in range(10))


def test_eval_mode_outside_mc_is_deterministic():
    model = small_cnn().eval()
    assert torch.equal(model(X), model(X))


def test_batchnorm_statistics_untouched_and_training_flag_restored():
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), ConsistentMCDropout(0.3), nn.Linear(6, 2)).train()
    before = model[1].running_mean.clone()
    batchal.predict_log_probs(model, torch.randn(40, 3), k=5)
    batchal.predict_embeddings(model, torch.randn(40, 3))
    assert torch.equal(model[1].running_mean, before)
    assert model.training and model[1].training


def test_convert_dropout_replaces_nested_layers():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout2d(0.25), nn.Sequential(nn.Flatten(), nn.Dropout(0.4), nn.Linear(2, 2)))
    batchal.convert_dropout(model)
    assert isinstance(model[1], ConsistentMCDropout2d) and model[1].p == 0.25
    assert isinstance(model[2][1], ConsistentMCDropout) and model[2][1].p == 0.4


def test_model_without_dropout_refused():
    with pytest.raises(ValueError, match="convert_dropout"):
        batchal.predict_log_probs(nn.Linear(3, 2), torch.randn(4, 3), k=3)


@pytest.mark.parametrize("p", [-0.1, 1.0, "0.5"])
def test_bad_dropout_probability_refused(p):
    with pytest.raises(ValueError, match="p must be"):
        ConsistentMCDropout(p)


@pytest.mark.parametrize("k", [0, 2.5])
def test_bad_k_refused(k):
    with pytest.raises(ValueError, match="k must"):
        batchal.predict_log_probs(small_cnn(), X, k=k)


def test_predict_embeddings_gives_last_linear_inputs():
    model = small_cnn()
    emb, lp = batchal.predict_embeddings(model, X, batch_size=5)
    assert emb.shape == (23, 16) and lp.shape == (23, 1, 3)
    with torch.no_grad():
        model.eval()
        hidden = model[:8](X)
        assert torch.allclose(emb, hidden, atol=1e-6)
        assert torch.allclose(lp[:, 0], torch.log_softmax(model(X), 1), atol=1e-6)


def test_predict_accepts_a_dataset():
    ds = torch.utils.data.TensorDataset(X, torch.zeros(len(X)))
    model = small_cnn()
    assert torch.allclose(batchal.predict_log_probs(model, ds, k=3, seed=0), batchal.predict_log_probs(model, X, k=3, seed=0))


def test_channels_last_layout_gives_the_same_predictions_and_restores_the_model():
    model = small_cnn()
    a = batchal.predict_log_probs(model, X, k=4, seed=1, channels_last=False)
    b = batchal.predict_log_probs(model, X, k=4, seed=1, channels_last=True)
    assert torch.allclose(a, b, atol=1e-5)
    assert model[1].weight.is_contiguous()


class ParallelBranches(nn.Module):
    """Two dropout branches side by side: the second never sees the first's expanded rows."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Sequential(ConsistentMCDropout(0.5), nn.Linear(4, 3)), nn.Sequential(ConsistentMCDropout(0.5), nn.Linear(4, 3))

    def forward(self, x):
        return self.a(x) + self.b(x)


class SkipPath(nn.Module):
    """A path to the output that skips dropout: shapes B*K and B meet."""

    def __init__(self):
        super().__init__()
        self.body, self.skip = nn.Sequential(ConsistentMCDropout(0.5), nn.Linear(4, 3)), nn.Linear(4, 3)

    def forward(self, x):
        return self.body(x) + self.skip(x)


@pytest.mark.parametrize("model_class", [ParallelBranches, SkipPath])
def test_models_that_need_expand_input_say_so(model_class):
    torch.manual_seed(0)
    model, x = model_class(), torch.randn(6, 4)
    with pytest.raises(RuntimeError, match="expand_input=True"):
        batchal.predict_log_probs(model, x, k=4, seed=0)
    out = batchal.predict_log_probs(model, x, k=4, seed=0, expand_input=True)
    assert out.shape == (6, 4, 3) and torch.isfinite(out).all()
