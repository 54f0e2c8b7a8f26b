"""Every registered strategy, of every label kind, against the one contract of ``batchal.select``.

The contract's generic checks live in ``batchal.acquisition.conformance`` (public, as
``batchal.check_strategy``); each runs here as its own test for every registered strategy. The
classification-specific messages follow.
"""

import math

import numpy as np
import pytest
import torch

import batchal
from batchal.acquisition import conformance
from conftest import random_log_probs

N, K, C, D = 60, 8, 4, 6
STRATEGIES = batchal.strategies("classification")
EVERY_STRATEGY = batchal.strategies()


def inputs(seed=0, n=N):
    g = torch.Generator().manual_seed(seed + 100)
    return {"log_probs_N_K_C": random_log_probs(n, K, C, seed), "embeddings_N_D": torch.randn(n, D, generator=g)}


def run(strategy, batch_size=5, seed=0, **kwargs):
    args = {**inputs(), **kwargs}
    if strategy == "batchbald":
        args.setdefault("num_samples", 1000)
    return batchal.select(strategy, batch_size, seed=seed, **args)


@pytest.mark.parametrize("check", conformance.CHECKS)
@pytest.mark.parametrize("strategy", EVERY_STRATEGY)
def test_contract(strategy, check):
    getattr(conformance._Checker(strategy, None), check)()


def test_every_label_kind_is_under_the_contract():
    assert {batchal.acquisition.registry.get_strategy(s).kind for s in EVERY_STRATEGY} == set(batchal.acquisition.registry.KINDS)
    assert len(conformance.CHECKS) >= 15


def _broken(monkeypatch, name, run, **options):
    spec = batchal.acquisition.registry.Strategy(name, run, needs_log_probs=True, needs_embeddings=False, summary="broken", options=options)
    monkeypatch.setitem(batchal.acquisition.registry._REGISTRY, name, spec)
    return name


def test_check_strategy_catches_a_strategy_that_ignores_its_seed(monkeypatch):
    def unseeded(inputs):  # draws from torch's global generator, not the one it was given
        return torch.randperm(inputs.pool_size)[: inputs.batch_size], torch.zeros(inputs.batch_size), {}

    with pytest.raises(AssertionError, match="same_seed_same_picks"):
        batchal.check_strategy(_broken(monkeypatch, "unseeded", unseeded))


def test_check_strategy_catches_repeated_picks(monkeypatch):
    def repeats(inputs):
        return [0] * inputs.batch_size, torch.zeros(inputs.batch_size), {}

    with pytest.raises(AssertionError, match="unique_in_range_picks.*repeated picks"):
        batchal.check_strategy(_broken(monkeypatch, "repeats", repeats))


def test_check_strategy_catches_an_option_that_refuses_numpy_numbers(monkeypatch):
    def top(inputs, temperature=1.0):
        return torch.arange(inputs.batch_size), torch.zeros(inputs.batch_size), {}

    def strict(value):
        if type(value) is not float:
            raise ValueError(f"temperature must be a float, got {value!r}")
        return value

    with pytest.raises(AssertionError, match="scalar_options_of_every_number_type"):
        batchal.check_strategy(_broken(monkeypatch, "strict", top, temperature=strict))


def test_check_strategy_passes_a_well_behaved_user_strategy(monkeypatch):
    def top_entropy(inputs):
        scores = batchal.scores.entropy(inputs.log_probs_N_K_C).double()
        picked = scores.topk(inputs.batch_size)
        return picked.indices, picked.values, {}

    batchal.check_strategy(_broken(monkeypatch, "top_entropy", top_entropy))


def test_registry_holds_both_papers_strategies():
    expected = {"random", "entropy", "bald", "variation_ratios", "mean_std", "least_confidence", "margin",
                "batchbald", "power_bald", "badge", "coreset", "kdpp"}
    assert expected <= set(STRATEGIES)


def bad_log_probs():
    lp = inputs()["log_probs_N_K_C"]
    nan = lp.clone(); nan[3, 1, 2] = math.nan
    posinf = lp.clone(); posinf[0, 0, 0] = math.inf
    unnormalised = lp + 0.5
    logits = torch.randn(N, K, C)
    return {
        "nan": (nan, "NaN"),
        "+inf": (posinf, r"\+inf"),
        "unnormalised": (unnormalised, "log_softmax"),
        "logits": (logits, "log_softmax"),
        "2-d": (lp[:, 0], "3 dimensions"),
        "4-d": (lp[None], "3 dimensions"),
        "empty pool": (lp[:0], "empty pool"),
        "integer": (torch.zeros(N, K, C, dtype=torch.long), "floating point"),
        "list": (lp.tolist(), "torch.Tensor"),
    }


def needs(strategy):
    spec = batchal.acquisition.registry.get_strategy(strategy)
    return spec.needs_log_probs, spec.needs_embeddings


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", list(bad_log_probs()))
def test_bad_log_probs_refused(strategy, case):
    value, message = bad_log_probs()[case]
    args = inputs()
    args["log_probs_N_K_C"] = value
    if case == "empty pool":
        args["embeddings_N_D"] = args["embeddings_N_D"][:0]
    with pytest.raises(ValueError, match="log_probs_N_K_C") as info:
        batchal.select(strategy, 2, seed=0, **args)
    assert info.match(message)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_minus_inf_log_probs_allowed(strategy):
    lp = inputs()["log_probs_N_K_C"].clone()
    lp[:, :, 0] = -math.inf
    lp = torch.log_softmax(lp, dim=2)
    sel = batchal.select(strategy, 4, log_probs_N_K_C=lp, embeddings_N_D=inputs()["embeddings_N_D"], seed=0,
                         **({"num_samples": 500} if strategy == "batchbald" else {}))
    assert torch.isfinite(sel.scores).all()
    assert len(set(sel.indices.tolist())) == 4


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", ["nan", "inf", "1-d", "3-d"])
def test_bad_embeddings_refused(strategy, case):
    emb = inputs()["embeddings_N_D"].clone()
    if case == "nan":
        emb[2, 1] = math.nan
    elif case == "inf":
        emb[2, 1] = -math.inf
    elif case == "1-d":
        emb = emb[:, 0]
    else:
        emb = emb[:, :, None]
    with pytest.raises(ValueError, match="embeddings_N_D"):
        batchal.select(strategy, 2, seed=0, log_probs_N_K_C=inputs()["log_probs_N_K_C"], embeddings_N_D=emb)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mismatched_pool_sizes_refused(strategy):
    args = inputs()
    args["embeddings_N_D"] = args["embeddings_N_D"][:-1]
    with pytest.raises(ValueError, match="same pool"):
        batchal.select(strategy, 2, seed=0, **args)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batch_size_larger_than_pool_message(strategy):
    with pytest.raises(ValueError, match=rf"larger than the pool \(N = {N}\)"):
        batchal.select(strategy, N + 1, seed=0, **inputs())


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if needs(s)[0]])
def test_missing_log_probs_refused(strategy):
    with pytest.raises(ValueError, match="needs log_probs_N_K_C"):
        batchal.select(strategy, 2, seed=0, embeddings_N_D=inputs()["embeddings_N_D"])


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if needs(s)[1]])
def test_missing_embeddings_refused(strategy):
    with pytest.raises(ValueError, match="needs embeddings_N_D"):
        batchal.select(strategy, 2, seed=0, log_probs_N_K_C=inputs()["log_probs_N_K_C"])


def test_unknown_strategy_lists_the_registered_ones():
    with pytest.raises(ValueError, match="batchbald"):
        batchal.select("batch_bald", 2, **inputs())


def test_num_samples_below_k_refused():
    with pytest.raises(ValueError, match="num_samples=4 is smaller than K=8"):
        batchal.select("batchbald", 2, num_samples=4, **inputs())


@pytest.mark.parametrize("option, value", [("num_samples", 0), ("lazy", "yes"), ("screen", 1), ("dtype", "float16"), ("memory_bytes", -1)])
def test_bad_batchbald_options_refused(option, value):
    with pytest.raises(ValueError, match=option):
        batchal.select("batchbald", 2, **{option: value}, **inputs())


@pytest.mark.parametrize("beta", [-1.0, math.nan, "1"])
def test_bad_power_bald_beta_refused(beta):
    with pytest.raises(ValueError, match="beta"):
        batchal.select("power_bald", 2, beta=beta, **inputs())


def test_random_needs_only_a_pool():
    sel = batchal.select("random", 4, embeddings_N_D=np.zeros((9, 2), dtype=np.float32), seed=0)
    assert len(set(sel.indices.tolist())) == 4
    with pytest.raises(ValueError, match="needs log_probs_N_K_C or embeddings_N_D"):
        batchal.select("random", 4, seed=0)


def test_progress_callback_reaches_the_total():
    calls = []
    batchal.select("batchbald", 4, num_samples=500, progress=lambda done, total: calls.append((done, total)), **inputs())
    assert calls[-1] == (4, 4)


def test_describe_names_the_options():
    text = batchal.describe("batchbald")
    assert "num_samples" in text and "40000" in text
