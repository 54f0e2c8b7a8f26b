"""BADGE, Coreset and k-DPP against brute force and the BADGE paper's properties."""

import math

import pytest
import torch
import torch.nn.functional as F

import batchal
from batchal.acquisition.badge import gradient_embeddings, kmeans_plus_plus
from batchal.acquisition.coreset import k_center_greedy
from conftest import random_log_probs


def pool(N=80, C=5, D=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return random_log_probs(N, 1, C, seed), torch.randn(N, D, generator=g)


@pytest.mark.parametrize("seed", range(3))
def test_proposition_1_gradient_norms(seed):
    """||g^y||^2 = (sum p^2 + 1 - 2 p_y) ||h||^2 for the true last-layer gradient; minimal at argmax p."""
    g = torch.Generator().manual_seed(seed)
    C, D = 6, 9
    h = torch.randn(D, generator=g, dtype=torch.float64)
    W = torch.randn(C, D, generator=g, dtype=torch.float64, requires_grad=True)
    logits = W @ h
    p = logits.softmax(0).detach()
    norms = []
    for y in range(C):
        (grad,) = torch.autograd.grad(F.cross_entropy(logits[None], torch.tensor([y])), W, retain_graph=True)
        norms.append(float((grad**2).sum()))
        assert norms[-1] == pytest.approx(float(((p**2).sum() + 1 - 2 * p[y]) * (h**2).sum()), rel=1e-10)
    assert min(range(C), key=norms.__getitem__) == int(p.argmax())
    # The factorised embedding is that gradient at the hallucinated label.
    emb = gradient_embeddings(p.log()[None, None], h[None])
    (grad,) = torch.autograd.grad(F.cross_entropy(logits[None], p.argmax()[None]), W)
    assert torch.allclose(emb.materialise()[0], grad.flatten(), atol=1e-12)


def test_factorised_distances_equal_materialised():
    log_probs, h = pool()
    emb = gradient_embeddings(log_probs, h)
    G = emb.materialise()
    brute = torch.cdist(G, G) ** 2
    norms = emb.squared_norms_N
    for i in (0, 5, 41):
        fact = norms + norms[i] - 2 * emb.inner_products(i)
        assert torch.allclose(fact, brute[:, i], atol=1e-9)
    assert torch.allclose(emb.gram(torch.arange(10)), G[:10] @ G[:10].t(), atol=1e-10)


def brute_force_kmeans_pp(G: torch.Tensor, b: int, generator: torch.Generator) -> list[int]:
    norms = (G**2).sum(1)
    picks = [int(norms.argmax())]
    for _ in range(1, b):
        d = (torch.cdist(G, G[picks]) ** 2).amin(1)
        d[picks] = 0
        picks.append(int(torch.multinomial(d, 1, generator=generator)))
    return picks


@pytest.mark.parametrize("seed", range(3))
def test_kmeans_pp_matches_brute_force_on_materialised_embeddings(seed):
    log_probs, h = pool(seed=seed)
    emb = gradient_embeddings(log_probs, h)
    ours, _ = kmeans_plus_plus(emb, 12, torch.Generator().manual_seed(seed))
    brute = brute_force_kmeans_pp(emb.materialise(), 12, torch.Generator().manual_seed(seed))
    assert ours == brute


def test_first_pick_has_the_largest_embedding_norm():
    log_probs, h = pool(seed=4)
    sel = batchal.select("badge", 5, log_probs_N_K_C=log_probs, embeddings_N_D=h, seed=0)
    norms = gradient_embeddings(log_probs, h).squared_norms_N
    assert int(sel.indices[0]) == int(norms.argmax())
    assert float(sel.scores[0]) == pytest.approx(float(norms.max()))


@pytest.mark.parametrize("b", [1, 5, 20])
def test_no_duplicates_on_a_pool_of_identical_points(b):
    log_probs = random_log_probs(1, 1, 4, 0).repeat(20, 1, 1)
    h = torch.ones(20, 3)
    sel = batchal.select("badge", b, log_probs_N_K_C=log_probs, embeddings_N_D=h, seed=0)
    assert len(set(sel.indices.tolist())) == b


def test_all_zero_embeddings_still_give_unique_picks():
    log_probs = torch.log_softmax(torch.randn(15, 1, 3), 2)
    sel = batchal.select("badge", 15, log_probs_N_K_C=log_probs, embeddings_N_D=torch.zeros(15, 4), seed=0)
    assert sorted(sel.indices.tolist()) == list(range(15))


def test_no_ghost_centre_at_the_origin():
    """A point with zero gradient embedding is far from the first centre, so it is drawn next.

    With the origin as a ghost centre its distance would be 0 and it would never be drawn.
    """
    C, D = 3, 2
    probs = torch.tensor([[0.4, 0.3, 0.3]]).repeat(12, 1)
    h = torch.ones(12, D)
    h[1:11] += 1e-3 * torch.randn(10, D, generator=torch.Generator().manual_seed(0))  # near the first centre
    h[11] = 0.0  # zero embedding: at the origin
    log_probs = probs.log()[:, None, :]
    h[0] *= 1.01  # the largest norm: the first centre
    draws = {int(batchal.select("badge", 2, log_probs_N_K_C=log_probs, embeddings_N_D=h, seed=s).indices[1]) for s in range(10)}
    assert draws == {11}


def brute_force_k_center(X: torch.Tensor, b: int, labelled=None) -> list[int]:
    X = X.double()
    picks = []
    centres = [] if labelled is None else list(labelled.double())
    for _ in range(b):
        if centres:
            d = torch.cdist(X, torch.stack(centres)).amin(1)
        else:
            d = (X - X.mean(0)).norm(dim=1)
        d[picks] = -1
        picks.append(int(d.argmax()))
        centres.append(X[picks[-1]])
    return picks


def test_coreset_matches_brute_force_k_center():
    X = torch.randn(70, 5, generator=torch.Generator().manual_seed(1))
    L = torch.randn(6, 5, generator=torch.Generator().manual_seed(2))
    assert k_center_greedy(X, 10)[0] == brute_force_k_center(X, 10)
    sel = batchal.select("coreset", 10, embeddings_N_D=X, labelled_embeddings=L)
    assert sel.indices.tolist() == brute_force_k_center(X, 10, L)
    assert float(sel.scores[0]) == pytest.approx(float(torch.cdist(X, L).amin(1).max()))
    # Batches of most of the pool: the working set is compacted several times on the way.
    assert k_center_greedy(X, 65)[0] == brute_force_k_center(X, 65)
    assert k_center_greedy(X, 70, L)[0] == brute_force_k_center(X, 70, L)


def test_coreset_labelled_embeddings_must_match_the_features():
    with pytest.raises(ValueError, match="labelled_embeddings"):
        batchal.select("coreset", 2, embeddings_N_D=torch.randn(5, 3), labelled_embeddings=torch.randn(4, 2))


def test_kdpp_with_k_1_samples_proportional_to_squared_norm():
    log_probs = torch.tensor([[0.5, 0.5]]).log()[:, None, :].repeat(3, 1, 1)
    h = torch.tensor([[1.0], [math.sqrt(2.0)], [math.sqrt(7.0)]])
    counts = torch.zeros(3)
    for s in range(600):
        counts[int(batchal.select("kdpp", 1, log_probs_N_K_C=log_probs, embeddings_N_D=h, seed=s).indices[0])] += 1
    assert counts[2] / 600 == pytest.approx(0.7, abs=0.06)
    assert counts[0] / 600 == pytest.approx(0.1, abs=0.05)


def test_kdpp_avoids_duplicates_of_the_same_direction():
    """det L_S = 0 for a set holding two copies: the swap chain moves to distinct directions."""
    C, D = 2, 4
    log_probs = torch.tensor([[0.3, 0.7]]).log()[:, None, :].repeat(20, 1, 1)
    h = torch.eye(D).repeat(5, 1)  # 4 directions, 5 copies each
    for s in range(5):
        sel = batchal.select("kdpp", 4, log_probs_N_K_C=log_probs, embeddings_N_D=h, seed=s)
        assert {i % D for i in sel.indices.tolist()} == set(range(D))


def test_power_bald_favours_high_bald_and_beta_zero_is_uniform():
    lp = random_log_probs(200, 10, 4, 3)
    bald = batchal.scores.bald(lp)
    top = set(bald.topk(20).indices.tolist())
    hits = sum(len(top & set(batchal.select("power_bald", 20, log_probs_N_K_C=lp, seed=s, beta=8.0).indices.tolist())) for s in range(5))
    uniform = sum(len(top & set(batchal.select("power_bald", 20, log_probs_N_K_C=lp, seed=s, beta=0.0).indices.tolist())) for s in range(5))
    assert hits > 3 * uniform


def naive_kdpp_chain(emb, k, generator, steps):
    """The same swap chain with every determinant ratio from slogdet (O(k^3) per proposal)."""
    from batchal.acquisition.kdpp import gumbel_top_k

    norms = emb.squared_norms_N
    N = len(norms)
    ridge = 1e-9 * float(norms.mean())
    chosen = gumbel_top_k(norms.clamp(min=1e-300).log(), k, generator)
    non_member = torch.ones(N, dtype=torch.bool)
    non_member[chosen] = False
    outside = non_member.nonzero().flatten()
    us = torch.randint(k, (steps,), generator=generator)
    rs = torch.rand(steps, generator=generator, dtype=torch.float64)
    js = torch.randint(N - k, (steps,), generator=generator)
    logdet = lambda idx: torch.linalg.slogdet(emb.gram(idx) + ridge * torch.eye(k, dtype=torch.float64))[1]
    for t in range(steps):
        u, j = int(us[t]), int(js[t])
        proposal = chosen.clone()
        proposal[u] = outside[j]
        ratio = float(torch.exp(logdet(proposal) - logdet(chosen)))
        if ratio >= 1 or float(rs[t]) < ratio:
            outside[j] = chosen[u]
            chosen = proposal
    return chosen.tolist()


@pytest.mark.parametrize("seed", range(3))
def test_kdpp_inverse_updates_match_a_chain_that_recomputes_determinants(seed):
    from batchal.acquisition.kdpp import sample_kdpp

    log_probs, h = pool(N=60, C=4, D=6, seed=seed)
    emb = gradient_embeddings(log_probs, h)
    fast, _ = sample_kdpp(emb, 8, torch.Generator().manual_seed(seed), steps=300)
    assert fast == naive_kdpp_chain(emb, 8, torch.Generator().manual_seed(seed), steps=300)
