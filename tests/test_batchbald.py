"""BatchBALD against brute force and against the paper's properties."""

import itertools
import math

import pytest
import torch

import batchal
from batchal.acquisition import batchbald as batchbald_module
from batchal.acquisition.batchbald import BatchBALDWarning, _JointProbabilities, exact_joint_entropy
from batchal.acquisition.scores import bald, conditional_entropy
from conftest import random_log_probs


def enumerated_joint_entropy(log_probs_n_K_C: torch.Tensor) -> float:
    """H(y_1..y_n) by listing every label configuration: p(y) = mean_k prod_i p_i(y_i | w_k)
    (float32 inputs renormalised in float64)."""
    probs = log_probs_n_K_C.double().softmax(-1)
    n, K, C = probs.shape
    total = 0.0
    for config in itertools.product(range(C), repeat=n):
        p_K = torch.ones(K, dtype=torch.float64)
        for i, c in enumerate(config):
            p_K = p_K * probs[i, :, c]
        p = float(p_K.mean())
        if p > 0:
            total -= p * math.log(p)
    return total


def brute_force_mi(log_probs_N_K_C, indices) -> float:
    lp = log_probs_N_K_C[list(indices)]
    return enumerated_joint_entropy(lp) - float(conditional_entropy(lp).sum())


@pytest.mark.parametrize("n, K, C, seed", [(1, 5, 3, 0), (2, 4, 4, 1), (3, 6, 3, 2), (4, 3, 2, 3), (3, 7, 5, 4)])
def test_exact_joint_entropy_equals_enumeration(n, K, C, seed):
    lp = random_log_probs(n, K, C, seed)
    assert exact_joint_entropy(lp) == pytest.approx(enumerated_joint_entropy(lp), abs=1e-10)


def test_exact_joint_entropy_with_zero_probabilities():
    lp = random_log_probs(3, 5, 4, 7).clone()
    lp[0, :, 1] = -math.inf
    lp = torch.log_softmax(lp, dim=2)
    assert exact_joint_entropy(lp) == pytest.approx(enumerated_joint_entropy(lp), abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_greedy_picks_the_exhaustive_argmax_and_scores_are_the_mutual_information(seed):
    lp = random_log_probs(25, 6, 3, seed)
    sel = batchal.select("batchbald", 4, log_probs_N_K_C=lp, num_samples=10_000, seed=0)
    picks = sel.indices.tolist()
    for step in range(4):
        chosen = picks[:step]
        candidates = [x for x in range(25) if x not in chosen]
        values = {x: brute_force_mi(lp, chosen + [x]) for x in candidates}
        best = max(values.values())
        assert values[picks[step]] == pytest.approx(best, abs=1e-9)
        assert float(sel.scores[step]) == pytest.approx(values[picks[step]], abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_first_pick_is_balds_argmax(seed):
    lp = random_log_probs(300, 10, 5, seed)
    sel = batchal.select("batchbald", 3, log_probs_N_K_C=lp, seed=0)
    assert int(sel.indices[0]) == int(bald(lp).argmax())
    assert float(sel.scores[0]) == pytest.approx(float(bald(lp).max()), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_lazy_and_plain_greedy_pick_the_same_points_in_the_exact_regime(seed):
    lp = random_log_probs(400, 12, 3, seed, scale=1.5)
    lazy = batchal.select("batchbald", 7, log_probs_N_K_C=lp, num_samples=3**7, lazy=True, seed=0)
    plain = batchal.select("batchbald", 7, log_probs_N_K_C=lp, num_samples=3**7, lazy=False, seed=0)
    assert lazy.info["exact_picks"] == 7
    assert lazy.indices.tolist() == plain.indices.tolist()
    assert torch.allclose(lazy.scores, plain.scores, atol=1e-10)
    assert lazy.info["evaluations"] < plain.info["evaluations"]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lazy", [True, False])
def test_float32_screening_gives_the_float64_picks_and_scores(seed, lazy):
    lp = random_log_probs(300, 15, 4, seed, scale=1.2)
    args = dict(log_probs_N_K_C=lp, num_samples=4**5, lazy=lazy, seed=0)
    screened = batchal.select("batchbald", 6, screen=True, **args)
    full = batchal.select("batchbald", 6, screen=False, **args)
    assert screened.indices.tolist() == full.indices.tolist()
    assert torch.allclose(screened.scores, full.scores, atol=1e-12, rtol=0)


def test_float32_error_is_far_below_the_screening_tolerance():
    from batchal.acquisition.batchbald import SCREEN_TOLERANCE

    for n, num_samples in ((3, 10**4), (6, 20_000)):
        chosen = random_log_probs(n, 50, 10, 31, scale=1.0).double().softmax(-1)
        joint = _JointProbabilities(50, num_samples, torch.float64, torch.device("cpu"), torch.Generator().manual_seed(0))
        for p in chosen:
            joint.add(p)
        candidates = random_log_probs(40, 50, 10, 32, scale=1.0).double().softmax(-1)
        h64 = joint.conditional_entropies(candidates)
        h32 = joint.conditional_entropies(candidates.float())
        assert float((h64 - h32).abs().max()) < SCREEN_TOLERANCE / 10


def test_small_memory_budget_gives_the_same_picks():
    from batchal.acquisition.batchbald import _block_bytes, memory_floor

    lp = random_log_probs(120, 8, 4, 3)
    smallest = memory_floor(120, 8, 4, 4**5, 5) + _block_bytes(4**5, 8, 4, 8)  # the floor plus one candidate's work
    wide = batchal.select("batchbald", 5, log_probs_N_K_C=lp, num_samples=4**5, seed=0)
    narrow = batchal.select("batchbald", 5, log_probs_N_K_C=lp, num_samples=4**5, seed=0, memory_bytes=smallest)
    assert wide.indices.tolist() == narrow.indices.tolist()
    with pytest.raises(ValueError, match=r"memory_bytes = 0 MiB is below what BatchBALD needs here: 1 MiB .* raise memory_bytes to at least 1 MiB"):
        batchal.select("batchbald", 5, log_probs_N_K_C=lp, num_samples=4**5, seed=0, memory_bytes=smallest - 1)


def repeated_pool(unique: int, copies: int, K: int, C: int, seed: int) -> torch.Tensor:
    return random_log_probs(unique, K, C, seed, scale=1.5).repeat(copies, 1, 1)


@pytest.mark.parametrize("seed", range(5))
def test_batchbald_never_picks_two_copies_while_top_b_bald_does(seed):
    unique, copies, b = 30, 3, 5
    lp = repeated_pool(unique, copies, K=20, C=3, seed=seed)
    batch = batchal.select("batchbald", b, log_probs_N_K_C=lp, num_samples=10**4, seed=0)
    assert batch.info["exact_picks"] == b
    originals = [i % unique for i in batch.indices.tolist()]
    assert len(set(originals)) == b, f"BatchBALD picked copies: {batch.indices.tolist()}"
    top = batchal.select("bald", b, log_probs_N_K_C=lp)
    assert len({i % unique for i in top.indices.tolist()}) < b


def test_batch_scores_grow_and_stay_under_log_k():
    K = 10
    lp = random_log_probs(200, K, 4, 11, scale=1.0)
    sel = batchal.select("batchbald", 6, log_probs_N_K_C=lp, num_samples=4**6, seed=0)
    scores = sel.scores.tolist()
    assert all(b >= a - 1e-12 for a, b in zip(scores, scores[1:]))
    assert scores[-1] <= math.log(K) + 1e-9


def joint_states(n, K, C, num_samples_list, seed=21, draw=0):
    chosen = random_log_probs(n, K, C, seed, scale=1.0).double().softmax(-1)
    states = [_JointProbabilities(K, m, torch.float64, torch.device("cpu"), torch.Generator().manual_seed(draw)) for m in num_samples_list]
    for p in chosen:
        for state in states:
            state.add(p)
    return states


def test_sampled_estimator_agrees_with_exact():
    """Importance-sampled H(y_S, y_x) within 0.05 nats of exact (C^n = 46,656 configurations, M = 20,000)."""
    n, K, C = 6, 20, 6
    exact, sampled = joint_states(n, K, C, [C**n, 20_000])
    assert not exact.sampled and sampled.sampled
    candidates = random_log_probs(30, K, C, 22, scale=1.0).double().softmax(-1)
    assert sampled.entropy == pytest.approx(exact.entropy, abs=0.05)
    truth = exact.joint_entropies(candidates)
    error = (sampled.joint_entropies(candidates) - truth).abs()
    assert float(error.max()) < 0.05
    # More samples, smaller error (averaged over draws): the estimator is consistent.
    def mean_error(num_samples):
        states = [joint_states(n, K, C, [num_samples], draw=d)[0] for d in range(4)]
        return sum(float((s.joint_entropies(candidates) - truth).abs().mean()) for s in states) / 4

    assert mean_error(40_000) < mean_error(2_000)


def test_sampled_regime_picks_match_exact_on_an_easy_pool():
    """Past the exact regime the picks still beat top-b BALD on copies (same property, sampled)."""
    unique, copies = 25, 4
    lp = repeated_pool(unique, copies, K=30, C=4, seed=3)
    sel = batchal.select("batchbald", 6, log_probs_N_K_C=lp, num_samples=300, seed=0)
    assert sel.info["exact_picks"] < 6
    assert len({i % unique for i in sel.indices.tolist()}) == 6


def test_float32_option_runs_and_agrees_on_the_first_picks():
    lp = random_log_probs(200, 10, 5, 8)
    a = batchal.select("batchbald", 3, log_probs_N_K_C=lp, seed=0)
    b = batchal.select("batchbald", 3, log_probs_N_K_C=lp, seed=0, dtype="float32")
    assert a.indices.tolist() == b.indices.tolist()


def test_ceiling_warning():
    lp = random_log_probs(100, 4, 6, 9, scale=3.0)
    with pytest.warns(BatchBALDWarning, match="ceiling"):
        batchal.select("batchbald", 5, log_probs_N_K_C=lp, seed=0)


@pytest.mark.parametrize("seed", range(3))
def test_prefilter_runs_batchbald_on_the_top_bald_points(seed):
    lp = random_log_probs(60, 8, 4, seed=seed)
    top = torch.sort(bald(lp).topk(15).indices).values
    filtered = batchal.select("batchbald", 4, log_probs_N_K_C=lp, seed=0, prefilter=15)
    direct = batchal.select("batchbald", 4, log_probs_N_K_C=lp[top], seed=0)
    assert filtered.indices.tolist() == top[direct.indices].tolist()
    assert torch.allclose(filtered.scores, direct.scores)
    assert int(filtered.indices[0]) == int(bald(lp).argmax())
    # A prefilter as large as the pool changes nothing.
    whole = batchal.select("batchbald", 4, log_probs_N_K_C=lp, seed=0)
    assert batchal.select("batchbald", 4, log_probs_N_K_C=lp, seed=0, prefilter=60).indices.tolist() == whole.indices.tolist()


@pytest.mark.parametrize("value", [3, 0, -1, 2.5, "many"])
def test_bad_prefilter_is_refused(value):
    lp = random_log_probs(20, 4, 3, seed=0)
    with pytest.raises(ValueError, match="prefilter"):
        batchal.select("batchbald", 4, log_probs_N_K_C=lp, seed=0, prefilter=value)


@pytest.mark.parametrize("seed", [0, 1])
def test_grouped_bounds_keep_plain_greedys_picks_in_the_sampled_regime(seed):
    """Grouped-configuration bounds are upper bounds on the estimator itself, so lazy greedy with
    them picks what plain greedy picks from the same sampled configurations (tie rule off)."""
    lp = random_log_probs(400, 12, 6, seed)
    common = dict(log_probs_N_K_C=lp, num_samples=1200, seed=0, tie_tolerance=0.0)
    grouped = batchal.select("batchbald", 9, lazy=True, bound_groups=8, **common)
    stale_only = batchal.select("batchbald", 9, lazy=True, bound_groups=None, **common)
    plain = batchal.select("batchbald", 9, lazy=False, **common)
    assert grouped.info["exact_picks"] < 9 and grouped.info["bound_evaluations"] > 0  # the bounds were used
    assert grouped.info["bound_refinements"] > 0  # and refined
    assert grouped.indices.tolist() == plain.indices.tolist() == stale_only.indices.tolist()
    assert torch.allclose(grouped.scores, plain.scores, atol=1e-10)
    assert grouped.info["evaluations"] < stale_only.info["evaluations"]


def test_grouped_entropies_bound_the_exact_ones_from_above():
    lp = random_log_probs(60, 10, 4, 3)
    joint = _JointProbabilities(10, 4**4, torch.float64, torch.device("cpu"), torch.Generator().manual_seed(0))
    for i in range(4):
        joint.add(lp[i].double().softmax(-1))
    probs = lp[4:].double().softmax(-1)
    exact = joint.conditional_entropies(probs)
    for groups in (1, 5, 40):
        bound = joint.conditional_entropies(probs, groups=groups)
        assert (bound >= exact - 1e-12).all()
    assert torch.allclose(joint.conditional_entropies(probs, groups=joint.M), exact, atol=1e-12)  # one group per configuration


def test_refined_groups_bound_from_above_and_tighten_level_by_level():
    """Each refinement level splits the groups of the level before (a finer partition), so its
    bound lies between the exact value and the coarser level's bound."""
    lp = random_log_probs(80, 16, 5, 4)
    joint = _JointProbabilities(16, 2000, torch.float64, torch.device("cpu"), torch.Generator().manual_seed(1))
    for i in range(6):
        joint.add(lp[i].double().softmax(-1))
    assert joint.sampled and joint.M > 500
    probs = lp[6:].double().softmax(-1)
    exact = joint.conditional_entropies(probs)
    previous = None
    for level in range(4):
        ratios, pi = joint.grouped(6, torch.float64, level)
        assert torch.allclose(pi.sum(), torch.tensor(1.0, dtype=torch.float64)) and len(pi) <= 6 * 4**level
        assert torch.allclose(pi @ ratios, joint.pi_M @ joint.ratios_M_K)  # the same mixture, regrouped
        bound = joint.conditional_entropies(probs, groups=6, level=level)
        assert (bound >= exact - 1e-12).all()
        if previous is not None:
            assert (bound <= previous + 1e-12).all()
        previous = bound
    assert float((previous - exact).mean()) < float((joint.conditional_entropies(probs, groups=6) - exact).mean())


def test_the_pool_cache_changes_no_pick():
    """Pools too large for the probability cache are read block by block: same picks and scores."""
    lp = random_log_probs(300, 12, 6, 5)
    common = dict(log_probs_N_K_C=lp, num_samples=1200, seed=0, bound_groups=8)
    cached = batchal.select("batchbald", 7, **common)
    from batchal.acquisition.batchbald import memory_floor

    # The pool's float32 probabilities are cached when they fit in half of what is left above the floor.
    streamed = batchal.select("batchbald", 7, memory_bytes=memory_floor(300, 12, 6, 1200, 7) + 2 * (300 * 12 * 6 * 4) - 2, **common)
    assert cached.indices.tolist() == streamed.indices.tolist()
    assert torch.allclose(cached.scores, streamed.scores, atol=1e-10)


@pytest.mark.parametrize("C,n", [(10, 5), (3, 12), (10, 18), (100, 10), (2, 1)])
def test_distinct_rows_equal_torch_unique(C, n):
    """The one-key-per-row unique returns torch.unique(dim=0)'s rows, order and counts, and falls
    back to it when C^n does not fit in an int64 key (C = 100, n = 10)."""
    g = torch.Generator().manual_seed(C * 100 + n)
    labels = torch.randint(0, C, (3000, n), generator=g)
    labels[300:600] = labels[:300].clone()  # duplicates
    expected = torch.unique(labels, dim=0, return_counts=True)
    rows, counts = batchbald_module._distinct_rows(labels, C)
    assert torch.equal(rows, expected[0]) and torch.equal(counts, expected[1])
