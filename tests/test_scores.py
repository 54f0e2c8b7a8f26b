"""Per-point scores against direct formulas on small cases."""

import math

import pytest
import torch

from batchal.acquisition import scores
from conftest import random_log_probs


def votes_by_counting(p):
    """1 - (votes for the modal class) / K, counted sample by sample."""
    out = []
    for p_K_C in p:
        counts = {}
        for p_C in p_K_C:
            c = max(range(p_C.shape[0]), key=lambda j: (float(p_C[j]), -j))  # first maximum
            counts[c] = counts.get(c, 0) + 1
        out.append(1 - max(counts.values()) / p_K_C.shape[0])
    return torch.tensor(out, dtype=torch.float64)


def direct(lp):
    p = lp.double().softmax(-1)  # N x K x C, renormalised like the library
    mean = p.mean(1)
    H = lambda q, dim: -(torch.where(q > 0, q * q.log(), torch.zeros_like(q))).sum(dim)
    top2 = mean.topk(2, dim=1).values
    return {
        "entropy": H(mean, 1),
        "bald": H(mean, 1) - H(p, 2).mean(1),
        "variation_ratios": votes_by_counting(p),
        "mean_std": p.std(1, correction=0).mean(1),
        "least_confidence": 1 - mean.max(1).values,
        "margin": -(top2[:, 0] - top2[:, 1]),
    }


@pytest.mark.parametrize("name", list(scores.SCORE_FUNCTIONS))
def test_scores_match_direct_formulas(name):
    lp = random_log_probs(50, 7, 5, 1)
    assert torch.allclose(scores.SCORE_FUNCTIONS[name](lp), direct(lp)[name], atol=1e-10)


def test_chunking_does_not_change_scores(monkeypatch):
    lp = random_log_probs(300, 6, 4, 2)
    full = scores.bald(lp)
    monkeypatch.setattr(scores, "_CHUNK_ELEMENTS", 50)
    assert torch.allclose(scores.bald(lp), full, atol=0)


def test_minus_inf_log_probs_give_finite_scores():
    lp = random_log_probs(10, 4, 3, 0).clone()
    lp[:, :, 2] = -math.inf
    lp = torch.log_softmax(lp, 2)
    for fn in scores.SCORE_FUNCTIONS.values():
        assert torch.isfinite(fn(lp)).all()


def test_bald_is_zero_when_samples_agree_and_at_most_log_k():
    agree = random_log_probs(20, 1, 5, 3).repeat(1, 8, 1)
    assert torch.allclose(scores.bald(agree), torch.zeros(20, dtype=torch.float64), atol=1e-12)
    K = 4
    onehots = torch.full((1, K, K), -math.inf)
    onehots[0, torch.arange(K), torch.arange(K)] = 0.0  # each sample certain of a different class
    assert float(scores.bald(onehots)[0]) == pytest.approx(math.log(K))
    assert float(scores.bald(random_log_probs(100, K, 6, 4)).max()) <= math.log(K) + 1e-12


def test_uniform_prediction_has_maximal_entropy():
    lp = torch.full((1, 3, 5), -math.log(5))
    assert float(scores.entropy(lp)[0]) == pytest.approx(math.log(5))
    assert float(scores.margin(lp)[0]) == pytest.approx(0.0)


def test_variation_ratios_count_votes_not_mean_probabilities():
    # Two samples vote for class 0 with little confidence, one for class 1 with a lot: the mean
    # prediction favours class 1, the vote class 0 (2 of 3).
    p = torch.tensor([[[0.55, 0.45], [0.55, 0.45], [0.01, 0.99]]], dtype=torch.float64)
    lp = p.log()
    assert float(scores.variation_ratios(lp)[0]) == pytest.approx(1 - 2 / 3)
    assert float(scores.least_confidence(lp)[0]) == pytest.approx(1 - (0.45 + 0.45 + 0.99) / 3)
    unanimous = torch.tensor([[[0.6, 0.4], [0.9, 0.1]]], dtype=torch.float64).log()
    assert float(scores.variation_ratios(unanimous)[0]) == 0.0
    assert float(scores.variation_ratios(lp[:, :1])[0]) == 0.0  # K = 1: one vote, no variation
