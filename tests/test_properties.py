"""Property-based contract checks (hypothesis): legal inputs of every dtype, layout and magnitude
for every registered strategy, plus the edge cases found by probing as regression tests."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchal
from batchal.acquisition.batchbald import BatchBALDWarning
from conftest import random_log_probs

STRATEGIES = batchal.strategies("classification")
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@st.composite
def pools(draw):
    """A legal pool: log-probabilities computed by log_softmax in the dtype itself, features of
    any magnitude the dtype can hold, in contiguous, transposed or reversed (numpy) layouts."""
    n = draw(st.integers(1, 24))
    k = draw(st.integers(1, 4))
    c = draw(st.integers(1, 5))
    d = draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    temperature = draw(st.sampled_from([0.01, 1.0, 8.0]))  # near-uniform to confident
    logits = (temperature * torch.randn(n, k, c, generator=g, dtype=torch.float64)).to(dtype)
    log_probs = torch.log_softmax(logits, dim=2)
    max_exponent = {torch.float64: 300, torch.float32: 30, torch.float16: 3, torch.bfloat16: 30}[dtype]
    magnitude = 10.0 ** draw(st.integers(-max_exponent, max_exponent))
    embeddings = (torch.randn(n, d, generator=g, dtype=torch.float64) * magnitude).to(dtype)
    layout = draw(st.sampled_from(["contiguous", "transposed", "numpy-reversed", "requires-grad"]))
    if layout == "transposed":
        log_probs = log_probs.transpose(0, 2).contiguous().transpose(0, 2)
        embeddings = embeddings.t().contiguous().t()
    elif layout == "numpy-reversed" and dtype not in (torch.bfloat16,):
        log_probs = log_probs.flip(0).numpy()[::-1]  # negative strides
        embeddings = embeddings.flip(0).numpy()[::-1]
    elif layout == "requires-grad":
        log_probs = log_probs.clone().requires_grad_(True)
        embeddings = embeddings.clone().requires_grad_(True)
    b = draw(st.integers(1, n))
    return {"log_probs_N_K_C": log_probs, "embeddings_N_D": embeddings}, b, seed


def _select(strategy, b, pool, seed):
    options = {"num_samples": 400} if strategy == "batchbald" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BatchBALDWarning)
        return batchal.select(strategy, b, seed=seed, **pool, **options)


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pools())
def test_contract_holds_for_every_legal_input(strategy, case):
    pool, b, seed = case
    n = len(pool["log_probs_N_K_C"])
    sel = _select(strategy, b, pool, seed)
    picks = sel.indices.tolist()
    assert len(picks) == b and len(set(picks)) == b and all(0 <= i < n for i in picks)
    assert sel.scores.shape == (b,) and torch.isfinite(sel.scores).all(), sel.scores
    assert not sel.scores.requires_grad and sel.scores.grad_fn is None and not sel.indices.requires_grad
    again = _select(strategy, b, pool, seed)
    assert torch.equal(again.indices, sel.indices) and torch.equal(again.scores, sel.scores)


# --- regression tests for the probed edge cases -------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_log_softmax_in_half_precision_is_accepted(strategy, dtype):
    logits = 3 * torch.randn(40, 5, 10, generator=torch.Generator().manual_seed(1))
    emb = torch.randn(40, 3, generator=torch.Generator().manual_seed(2))
    for lp in (torch.log_softmax(logits.to(dtype), 2), torch.log_softmax(1e-3 * logits, 2).to(dtype)):  # and near-uniform
        sel = _select(strategy, 4, {"log_probs_N_K_C": lp, "embeddings_N_D": emb.to(dtype)}, 0)
        assert torch.isfinite(sel.scores).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_logits_are_still_refused_in_every_dtype(dtype):
    logits = (3 * torch.randn(20, 4, 10, generator=torch.Generator().manual_seed(0)) + 2).to(dtype)
    with pytest.raises(ValueError, match="if these are logits, apply log_softmax"):
        batchal.select("bald", 3, log_probs_N_K_C=logits)


def test_half_precision_scores_match_float32_within_rounding():
    lp32 = random_log_probs(50, 6, 10, 3)
    lp16 = torch.log_softmax(lp32.to(torch.bfloat16), 2)
    close = batchal.scores.bald(lp16.float()), batchal.scores.bald(lp32)
    assert torch.allclose(*close, atol=0.05)
    assert batchal.select("bald", 5, log_probs_N_K_C=lp16).scores.dtype == torch.float64


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_inputs_with_requires_grad_work_and_outputs_carry_no_graph(strategy):
    lp = random_log_probs(30, 4, 5, 0).requires_grad_(True)
    emb = torch.randn(30, 4, requires_grad=True)
    sel = _select(strategy, 5, {"log_probs_N_K_C": lp * 1.0, "embeddings_N_D": emb * 1.0}, 0)  # non-leaf, with grad_fn
    assert sel.scores.grad_fn is None and not sel.scores.requires_grad
    plain = _select(strategy, 5, {"log_probs_N_K_C": lp.detach(), "embeddings_N_D": emb.detach()}, 0)
    assert torch.equal(sel.indices, plain.indices)


@pytest.mark.parametrize("argument", ["log_probs_N_K_C", "embeddings_N_D"])
def test_meta_tensors_are_refused_by_name(argument):
    pool = {"log_probs_N_K_C": random_log_probs(10, 2, 3), "embeddings_N_D": torch.randn(10, 2)}
    pool[argument] = pool[argument].to("meta")
    for strategy in STRATEGIES:
        spec = batchal.acquisition.registry.get_strategy(strategy)
        if argument == "embeddings_N_D" and not spec.needs_embeddings and spec.name != "random":
            continue
        with pytest.raises(ValueError, match=f"{argument} is on the 'meta' device"):
            batchal.select(strategy, 2, **pool)


@pytest.mark.parametrize("strategy", ["coreset", "badge", "kdpp"])
@pytest.mark.parametrize("magnitude", [1e200, 1e-200])
def test_huge_and_tiny_embeddings_give_finite_scores_and_scale_free_picks(strategy, magnitude):
    lp = random_log_probs(40, 1, 5, 0)
    emb = torch.randn(40, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    scaled = batchal.select(strategy, 8, log_probs_N_K_C=lp, embeddings_N_D=emb * magnitude, seed=1)
    assert torch.isfinite(scaled.scores).all() and (scaled.scores > 0).all()
    assert 0 < scaled.info["embedding_scale"] != 1.0
    # Rescaling by a power of two is exact, so the picks are those on features of order one.
    reference = batchal.select(strategy, 8, log_probs_N_K_C=lp, embeddings_N_D=emb * magnitude * scaled.info["embedding_scale"], seed=1)
    assert torch.equal(scaled.indices, reference.indices)
    assert "embedding_scale" not in reference.info


def test_coreset_labelled_embeddings_are_rescaled_with_the_pool():
    g = torch.Generator().manual_seed(0)
    emb, labelled = torch.randn(30, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    big = batchal.select("coreset", 6, embeddings_N_D=emb * 1e250, labelled_embeddings=labelled * 1e250)
    small = batchal.select("coreset", 6, embeddings_N_D=emb, labelled_embeddings=labelled)
    assert torch.equal(big.indices, small.indices) and torch.isfinite(big.scores).all()


def test_numpy_arrays_with_negative_strides_and_object_dtype():
    lp = random_log_probs(20, 3, 4, 0).numpy()
    reversed_view = lp[::-1]
    sel = batchal.select("bald", 3, log_probs_N_K_C=reversed_view)
    assert torch.equal(sel.indices, batchal.select("bald", 3, log_probs_N_K_C=np.ascontiguousarray(reversed_view)).indices)
    with pytest.raises(ValueError, match="log_probs_N_K_C must hold numbers, got a numpy array of dtype object"):
        batchal.select("bald", 3, log_probs_N_K_C=lp.astype(object))
    with pytest.raises(ValueError, match="embeddings_N_D must hold numbers"):
        batchal.select("coreset", 3, embeddings_N_D=np.array([["a", "b"]] * 5))


def test_batchbald_at_the_log_k_ceiling_stops_re_evaluating_the_pool():
    """Once the batch's information nears log K every gain is ~0: with the tie tolerance lazy
    greedy evaluates a few blocks per pick instead of the whole pool at every pick."""
    N, K, C, b = 800, 8, 10, 16
    lp = random_log_probs(N, K, C, 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Grouped bounds off in both, to see the tie rule alone.
        tied = batchal.select("batchbald", b, log_probs_N_K_C=lp, seed=0, num_samples=4000, bound_groups=None)
        untied = batchal.select("batchbald", b, log_probs_N_K_C=lp, seed=0, num_samples=4000, tie_tolerance=0.0, bound_groups=None)
    ceiling_warnings = [w for w in caught if "ceiling" in str(w.message)]
    assert ceiling_warnings and "raise K" in str(ceiling_warnings[0].message)
    reached = next(i for i, s in enumerate(untied.scores.tolist()) if s > math.log(K) - 0.02)
    assert reached < b - 4, "the setting must reach the ceiling early for this test to mean anything"
    assert untied.info["evaluations"] > N * (b - reached - 1) * 0.9  # the whole pool, every pick past the ceiling
    assert tied.info["evaluations"] < untied.info["evaluations"] / 3
    # Before the ceiling the two agree pick for pick; every pick's information is still reported.
    assert tied.indices[: reached + 1].tolist() == untied.indices[: reached + 1].tolist()
    assert len(tied.scores) == b and torch.isfinite(tied.scores).all()
    assert float(tied.scores[-1]) > math.log(K) - 0.1


def test_tie_tolerance_is_validated():
    with pytest.raises(ValueError, match="tie_tolerance must be >= 0"):
        batchal.select("batchbald", 2, log_probs_N_K_C=random_log_probs(5, 2, 2), tie_tolerance=-1.0)
