"""Numerics that hold at any legal magnitude, and the contract's reproductions of issue 32.

The fuzz here (hypothesis, bounded) draws the same legal inputs as the committed run
``benchmarks/fuzz_label_kinds.py`` (results/benchmarks/fuzz.txt): magnitudes 10^-150 to 10^150.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import batchal
from batchal.acquisition import conformance, regression

E = torch.randn(30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def brute_force_logdet_greedy(phi, noise, b):
    picks = []
    for _ in range(b):
        def value(i):
            B = picks + [i]
            return float(torch.logdet(phi[B] @ phi[B].t() + noise * torch.eye(len(B), dtype=torch.float64)))
        picks.append(max((i for i in range(len(phi)) if i not in picks), key=value))
    return picks


def test_maxdet_is_scale_invariant_with_its_noise():
    # Features above 2^100 are rescaled by select(); the noise, a variance in their units, with them.
    plain = batchal.select("regression_maxdet", 8, embeddings_N_D=E, noise=0.5)
    scaled = batchal.select("regression_maxdet", 8, embeddings_N_D=E * 2.0**120, noise=0.5 * 2.0**240)
    assert plain.indices.tolist() == [12, 13, 0, 18, 17, 9, 2, 7] == brute_force_logdet_greedy(E, 0.5, 8)
    assert scaled.indices.tolist() == plain.indices.tolist()
    assert plain.total == pytest.approx(6.6121, abs=1e-4) and scaled.total == pytest.approx(plain.total, rel=1e-12)
    tiny = batchal.select("regression_maxdet", 8, embeddings_N_D=E * 2.0**-120, noise=0.5 * 2.0**-240)
    assert tiny.indices.tolist() == plain.indices.tolist()


def assert_clean_greedy(selection, n):
    picks = selection.indices.tolist()
    gains = selection.gains
    assert len(set(picks)) == len(picks) and all(0 <= i < n for i in picks)
    assert torch.isfinite(gains).all() and (gains >= 0).all()
    # Greedy on a submodular function: gains never increase (beyond rounding).
    assert (gains[1:] <= gains[:-1] + 1e-9 * max(1.0, float(gains[0]))).all()


def test_regression_batchbald_at_a_prior_to_noise_ratio_of_1e130_stops_cleanly():
    mean = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e100
    sel = batchal.select("regression_batchbald", 20, mean_N_K=mean, noise=1e70, seed=0)
    assert_clean_greedy(sel, 20)  # was [4, 0, 0, ...] with NaN
    # Two samples: the centred means have rank 1, so after one pick nothing is left to learn about w.
    assert sel.info["rank_exhausted_after"] == 1
    assert sel.gains[0] == pytest.approx(0.5 * math.log(float((mean[4] - mean[4].mean()).pow(2).mean()) / 1e70), rel=1e-9)
    assert (sel.gains[1:] == 0).all()


def test_regression_batchbald_with_noise_1e_16_has_no_negative_gain():
    mean = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sel = batchal.select("regression_batchbald", 20, mean_N_K=mean, noise=1e-16, seed=0)
    assert_clean_greedy(sel, 20)  # was 37.9, 37.5, -289.5, ...
    wide = torch.randn(40, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sel = batchal.select("regression_batchbald", 12, mean_N_K=wide, noise=1e-16, seed=0)
    assert_clean_greedy(sel, 40)
    assert sel.info["rank_exhausted_after"] == 7  # K = 8 centred samples span 7 dimensions


def test_gains_are_differences_of_logs_where_the_ratio_overflows():
    # prior variance / noise = 1e300 / 1e-300: the ratio overflows float64, its log does not.
    phi = torch.tensor([[1e150], [2e150]], dtype=torch.float64)
    sel = batchal.select("regression_maxdet", 1, embeddings_N_D=phi, noise=1e-300)
    assert sel.indices.tolist() == [1]
    assert sel.scores[0] == pytest.approx(0.5 * (math.log(4e300) + math.log(1e300)), rel=1e-12)
    mean = torch.tensor([[1e150, -1e150], [0.0, 1e-150]], dtype=torch.float64)
    bald = batchal.select("regression_bald", 2, mean_N_K=mean, noise=1e-150)
    assert torch.isfinite(bald.scores).all()
    assert bald.scores[0] == pytest.approx(0.5 * (math.log(1e300) - math.log(1e-150)), rel=1e-9)  # spread 1e300, noise 1e-150


def test_regression_maxdet_agrees_with_brute_force_after_the_fix():
    for seed in range(5):
        phi = torch.randn(15, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        sel = batchal.select("regression_maxdet", 6, embeddings_N_D=phi, noise=0.3)
        assert sel.indices.tolist() == brute_force_logdet_greedy(phi, 0.3, 6)


def test_the_kinds_reproductions_are_refused_or_handled_by_name():
    g = torch.Generator().manual_seed(0)
    multi = torch.nn.functional.logsigmoid(torch.randn(8, 3, 2, generator=g)).requires_grad_(True)
    assert len(batchal.select("multilabel_batchbald", 3, log_probs_N_K_L=multi, num_samples=64, seed=0)) == 3  # was a matmul crash
    for strategy, inputs in (("multilabel_bald", {"log_probs_N_K_L": multi.detach()}),
                             ("regression_bald", {"mean_N_K": torch.randn(5, 3), "noise": 1.0}),
                             ("segmentation_bald", {"log_probs_N_K_C_H_W": torch.log_softmax(torch.randn(4, 2, 3, 2, 2), 2)})):
        name = next(k for k, v in inputs.items() if isinstance(v, torch.Tensor))
        with pytest.raises(ValueError, match=f"{name} is on the 'meta' device"):
            batchal.select(strategy, 2, **{**inputs, name: inputs[name].to("meta")})
        numpy_picks = batchal.select(strategy, 2, seed=0, **{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
        assert numpy_picks.indices.tolist() == batchal.select(strategy, 2, seed=0, **inputs).indices.tolist()
    with pytest.raises(ValueError, match="log_probs_N_K_C_H_W must be log-probabilities"):
        batchal.select("segmentation_bald", 2, log_probs_N_K_C_H_W=torch.randn(6, 3, 4, 5, 5) - 20)
    with pytest.raises(ValueError, match="log_probs_N_K_C_H_W must be log-probabilities"):
        batchal.select("segmentation_bald", 2, log_probs_N_K_C_H_W=torch.log_softmax(torch.randn(6, 3, 4, 5, 5) * 3, dim=1))
    dense = torch.log_softmax(torch.randn(6, 5, 3, 4, 4), 2)
    with pytest.raises(ValueError, match="num_samples=4 is smaller than K=5"):
        batchal.select("segmentation_batchbald", 2, log_probs_N_K_C_H_W=dense, num_samples=4)
    mean = torch.randn(10, 4, generator=g, dtype=torch.float64)
    reference = batchal.select("regression_batchbald", 3, mean_N_K=mean, noise=0.1).indices.tolist()
    for noise in (np.float32(0.1), torch.tensor(0.1), np.float64(0.1)):
        assert batchal.select("regression_batchbald", 3, mean_N_K=mean, noise=noise).indices.tolist() == reference
    with pytest.raises(ValueError, match="mean_N_K must be real"):
        batchal.select("regression_batchbald", 3, mean_N_K=mean.to(torch.complex128), noise=0.1)
    with pytest.raises(ValueError, match="mean_N_K holds an empty pool"):
        batchal.select("regression_batchbald", 1, mean_N_K=mean[:0], noise=0.1)


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(batchal.strategies()), st.integers(0, 2**32 - 1))
def test_fuzz_every_strategy_with_legal_inputs_at_any_magnitude(strategy, seed):
    assert conformance.fuzz_failure(strategy, seed) is None
