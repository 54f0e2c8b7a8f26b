"""EPIG, Cluster-Margin and TypiClust against their definitions on small cases."""

import itertools
import math

import numpy as np
import pytest
import torch

import batchal
from batchal.acquisition.epig import epig
from conftest import random_log_probs


def epig_by_enumeration(lp_N_K_C, target_T_K_C):
    p, q = lp_N_K_C.double().softmax(2), target_T_K_C.double().softmax(2)
    N, K, C = p.shape
    T, _, C2 = q.shape
    out = []
    for n in range(N):
        total = 0.0
        for t in range(T):
            for c, c2 in itertools.product(range(C), range(C2)):
                joint = sum(float(p[n, k, c] * q[t, k, c2]) for k in range(K)) / K
                pc, qc = float(p[n, :, c].mean()), float(q[t, :, c2].mean())
                if joint > 0:
                    total += joint * math.log(joint / (pc * qc))
        out.append(total / T)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("N, K, C, T", [(6, 3, 2, 4), (5, 4, 3, 3), (4, 1, 3, 2)])
def test_epig_equals_its_definition(N, K, C, T):
    lp, target = random_log_probs(N, K, C, 0), random_log_probs(T, K, C, 1)
    assert torch.allclose(epig(lp, target), epig_by_enumeration(lp, target), atol=1e-10)
    if K > 1:  # with K = 1 every EPIG is 0 and the order is rounding noise
        sel = batchal.select("epig", 2, log_probs_N_K_C=lp, target_log_probs=target)
        assert sel.indices.tolist() == torch.sort(-epig_by_enumeration(lp, target), stable=True).indices[:2].tolist()


def test_epig_is_between_zero_and_bald_and_zero_for_one_sample():
    lp = random_log_probs(200, 8, 5, 3)
    scores = epig(lp, random_log_probs(50, 8, 5, 4))
    assert (scores >= 0).all() and (scores <= batchal.scores.bald(lp) + 1e-12).all()
    assert torch.allclose(epig(lp[:, :1], lp[:20, :1]), torch.zeros(200, dtype=torch.float64))


def test_epig_prefers_points_informative_about_the_targets():
    # Targets all depend on weight direction A; candidate 0 is uncertain along A, candidate 1 along B.
    K = 4
    along_a = torch.tensor([0.95, 0.05, 0.95, 0.05])  # p(class 0) under each sample: disagreement 1/2 vs 3/4
    along_b = torch.tensor([0.95, 0.95, 0.05, 0.05])
    to_lp = lambda p0: torch.stack([p0, 1 - p0], dim=1).log()[None]
    pool = torch.cat([to_lp(along_a), to_lp(along_b)])
    targets = to_lp(along_a).repeat(3, 1, 1)
    assert torch.allclose(batchal.scores.bald(pool)[0], batchal.scores.bald(pool)[1])  # BALD cannot tell them apart
    scores = epig(pool, targets)
    assert scores[0] > 0.3 and scores[1] < 1e-12
    assert batchal.select("epig", 1, log_probs_N_K_C=pool, target_log_probs=targets).indices.tolist() == [0]


def test_target_log_probs_must_match_k_and_c():
    with pytest.raises(ValueError, match="target_log_probs has shape"):
        batchal.select("epig", 2, log_probs_N_K_C=random_log_probs(10, 3, 4), target_log_probs=random_log_probs(5, 2, 4))
    with pytest.raises(ValueError, match="target_log_probs must be log-probabilities"):
        batchal.select("epig", 2, log_probs_N_K_C=random_log_probs(10, 3, 4), target_log_probs=torch.ones(5, 3, 4))


def blobs(sizes, spread=0.05, seed=0, centres=None):
    g = np.random.default_rng(seed)
    centres = centres if centres is not None else [np.array([10.0 * i, (-1) ** i * 5.0]) for i in range(len(sizes))]
    points, label = [], []
    for c, (centre, n) in enumerate(zip(centres, sizes)):
        points.append(centre + spread * g.standard_normal((n, 2)))
        label += [c] * n
    return torch.tensor(np.concatenate(points)), np.array(label)


def test_cluster_margin_spans_the_clusters_of_uncertain_points():
    emb, blob = blobs([30, 20, 10, 5, 3])
    N = len(emb)
    # Every point uncertain (margins 0.02-0.1) except 8 certain points in blob 0.
    p0 = torch.full((N,), 0.5) + torch.linspace(0.01, 0.05, N)
    p0[:8] = 0.99
    lp = torch.stack([p0, 1 - p0], 1).log()[:, None, :]
    # 12 x 5 = 60 candidates: exactly the uncertain points, in five blobs.
    sel = batchal.select("cluster_margin", 5, log_probs_N_K_C=lp, embeddings_N_D=emb, seed=0, margin_multiplier=12.0)
    assert sorted(blob[sel.indices.numpy()].tolist()) == [0, 1, 2, 3, 4]  # one per cluster
    top = batchal.select("margin", 5, log_probs_N_K_C=lp)
    assert len(set(blob[top.indices.numpy()].tolist())) == 1  # plain margin piles into one blob
    assert not set(sel.indices.tolist()) & set(range(8))  # certain points are never candidates
    ten = batchal.select("cluster_margin", 10, log_probs_N_K_C=lp, embeddings_N_D=emb, seed=0, margin_multiplier=6.0)
    counts = np.bincount(blob[ten.indices.numpy()], minlength=5)
    assert counts.min() >= 1 and counts.max() <= 3  # a larger batch spans every blob, round-robin


def test_typiclust_picks_the_densest_point_of_each_cluster():
    emb, blob = blobs([40, 30, 20], spread=1.0, seed=1)
    centres = [emb[blob == c].mean(0) for c in range(3)]
    # A tight core at each centre: its middle point is the most typical of the cluster.
    extra = torch.cat([centre + 0.01 * torch.randn(6, 2, generator=torch.Generator().manual_seed(c), dtype=torch.float64) for c, centre in enumerate(centres)])
    emb = torch.cat([emb, extra])
    blob = np.concatenate([blob, np.repeat([0, 1, 2], 6)])
    sel = batchal.select("typiclust", 3, embeddings_N_D=emb, seed=0)
    picks = sel.indices.tolist()
    assert sorted(blob[picks].tolist()) == [0, 1, 2]
    assert all(p >= 90 for p in picks), picks  # each pick is in its cluster's dense core
    for p in picks:  # and is the member of highest typicality, by brute force
        members = np.flatnonzero(blob == blob[p])
        d = torch.cdist(emb[members], emb[members]).numpy()
        typicality = 1 / np.sort(d, axis=1)[:, 1:21].mean(1)
        assert members[int(np.argmax(typicality))] == p
    # Clusters holding a labelled point are left for the uncovered ones.
    labelled = emb[blob == 0][:2]
    cold = batchal.select("typiclust", 2, embeddings_N_D=emb, labelled_embeddings=labelled, seed=0)
    assert 0 not in blob[cold.indices.numpy()].tolist()
