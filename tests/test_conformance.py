"""Every registered strategy against the one contract of ``batchal.select``."""

import math

import numpy as np
import pytest
import torch

import batchal
from conftest import random_log_probs

N, K, C, D = 60, 8, 4, 6
STRATEGIES = batchal.strategies("classification")


def inputs(seed=0, n=N):
    g = torch.Generator().manual_seed(seed + 100)
    return {"log_probs_N_K_C": random_log_probs(n, K, C, seed), "embeddings_N_D": torch.randn(n, D, generator=g)}


def run(strategy, batch_size=5, seed=0, **kwargs):
    args = {**inputs(), **kwargs}
    if strategy == "batchbald":
        args.setdefault("num_samples", 1000)
    return batchal.select(strategy, batch_size, seed=seed, **args)


def test_registry_holds_both_papers_strategies():
    expected = {"random", "entropy", "bald", "variation_ratios", "mean_std", "least_confidence", "margin",
                "batchbald", "power_bald", "badge", "coreset", "kdpp"}
    assert expected <= set(STRATEGIES)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_picks(strategy):
    a, b = run(strategy, seed=3), run(strategy, seed=3)
    assert torch.equal(a.indices, b.indices)
    assert torch.allclose(a.scores, b.scores)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_generator_as_seed(strategy):
    a = run(strategy, seed=torch.Generator().manual_seed(5))
    b = run(strategy, seed=torch.Generator().manual_seed(5))
    assert torch.equal(a.indices, b.indices)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("batch_size", [1, 7, N])
def test_unique_in_range_indices(strategy, batch_size):
    sel = run(strategy, batch_size=batch_size)
    assert sel.indices.dtype == torch.long
    assert sel.indices.shape == (batch_size,)
    assert sel.scores.shape == (batch_size,)
    assert len(set(sel.indices.tolist())) == batch_size
    assert int(sel.indices.min()) >= 0 and int(sel.indices.max()) < N
    assert torch.isfinite(sel.scores).all()
    assert sel.strategy == strategy


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_single_point_pool(strategy):
    sel = batchal.select(strategy, 1, seed=0, **inputs(n=1))
    assert sel.indices.tolist() == [0]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_numpy_inputs_accepted(strategy):
    args = {k: v.numpy() for k, v in inputs().items()}
    if strategy == "batchbald":
        args["num_samples"] = 1000
    sel = batchal.select(strategy, 3, seed=1, **args)
    assert torch.equal(sel.indices, run(strategy, batch_size=3, seed=1).indices)


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
@pytest.mark.parametrize("batch_size", [0, -3, N + 1, 2.0, True, "5"])
def test_bad_batch_size_refused(strategy, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        batchal.select(strategy, batch_size, seed=0, **inputs())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batch_size_larger_than_pool_message(strategy):
    with pytest.raises(ValueError, match=rf"larger than the pool \(N = {N}\)"):
        batchal.select(strategy, N + 1, seed=0, **inputs())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unknown_option_refused(strategy):
    with pytest.raises(ValueError, match="unknown option"):
        batchal.select(strategy, 2, seed=0, no_such_option=1, **inputs())


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", [-1, 1.5, "x"])
def test_bad_seed_refused(strategy, seed):
    with pytest.raises(ValueError, match="seed"):
        batchal.select(strategy, 2, seed=seed, **inputs())


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
