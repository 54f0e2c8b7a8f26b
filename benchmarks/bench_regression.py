"""batchal's regression batch selection beside bmdal_reg's own (Holzmüller et al., JMLR 2023) on the same features.

Two feature sets, each the pool of a regression problem:
  (a) "last layer": the 64 penultimate features of an MLP trained on 200 points of a Friedman #1
      problem (sklearn.datasets.make_friedman1, 5,000 pool points), the "ll" kernel of bmdal_reg;
  (b) "K samples": the centred predictive means of K = 32 MC-dropout samples of the same MLP,
      divided by sqrt(K), so that their linear kernel is the population covariance over w: the
      Gaussian joint of regression_batchbald.
On each, at b = 10, 50 and 200: batchal's greedy (regression_maxdet; on (b) also
regression_batchbald, the same maths from the samples themselves) and bmdal_reg's select_batch
with base_kernel="linear", no transforms, selection_method="maxdet", maxdet_sigma = sigma, P-mode,
float64 (its train set: one pool row, unused in P-mode); on (a) also TP-mode (sel_with_train=True,
the 200 training points' features given), against regression_maxdet with labelled_embeddings. Printed: seconds (median of 3), 1/2 log det(K_B + sigma^2 I) - b/2 log sigma^2 of the batch
each picked (the quantity both maximise greedily), and how many picks agree (same set; same order).

Usage: python benchmarks/bench_regression.py [--out results/benchmarks/regression.txt]
Needs bmdal_reg (benchmarks/install.sh installs it without its plotting dependencies; its
np.Inf, removed in NumPy 2, is aliased to np.inf before it is imported).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

import torch

import batchal
from batchal.threads import use_threads


def features(seed=0):
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=5_200, n_features=10, noise=1.0, random_state=seed)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), batchal.ConsistentMCDropout(0.1), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(500):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x[:200]).squeeze(1), y[:200]).backward()
        opt.step()
    pool = x[200:]
    net.eval()
    with torch.no_grad():
        last = net[:2](pool).double()
        last_train = net[:2](x[:200]).double()
    from batchal.bayesian.dropout import mc_dropout

    K = 32
    with torch.no_grad(), mc_dropout(net, K, seed=seed):
        means = net(pool).reshape(len(pool), K).double()
    centred = (means - means.mean(1, keepdim=True)) / math.sqrt(K)
    return {"last layer": last, "K samples": centred}, means, last_train


def log_det(phi, batch, sigma2):
    b = phi[torch.as_tensor(batch)]
    return float(0.5 * torch.logdet(b @ b.t() + sigma2 * torch.eye(len(batch), dtype=torch.float64)) - 0.5 * len(batch) * math.log(sigma2))


def log_det_given(phi, known, batch, sigma2):
    """The batch's log det gain given the labelled features (TP-mode's objective)."""
    both = torch.cat([known, phi[torch.as_tensor(batch)]])
    eye = lambda n: torch.eye(n, dtype=torch.float64)
    return float(0.5 * (torch.logdet(both @ both.t() + sigma2 * eye(len(both))) - torch.logdet(known @ known.t() + sigma2 * eye(len(known))))
                 - 0.5 * len(batch) * math.log(sigma2))


def timed(fn, repeats=3):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bmdal(phi, b, sigma, train=None):
    import numpy

    numpy.Inf = numpy.inf  # bmdal_reg 3.0.2 still uses np.Inf, which NumPy 2 removed (an alias, nothing else changes)
    from bmdal_reg.bmdal.algorithms import select_batch
    from bmdal_reg.bmdal.feature_data import TensorFeatureData

    idx, _ = select_batch(b, [torch.nn.Identity()], {"train": TensorFeatureData(phi[:1] if train is None else train),
                                                     "pool": TensorFeatureData(phi)}, None,
                          base_kernel="linear", kernel_transforms=[], selection_method="maxdet", maxdet_sigma=sigma,
                          sel_with_train=train is not None, allow_float64=True, verbosity=0)
    return idx.tolist()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="results/benchmarks/regression.txt")
    args = parser.parse_args()
    use_threads(None)
    try:
        import bmdal_reg  # noqa: F401
    except ImportError:
        print("bmdal_reg is not installed: run benchmarks/install.sh", file=sys.stderr)
        return 2
    sets, means, last_train = features()
    lines = [f"# {' '.join(sys.argv)}", f"# {platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, "
             f"load average {os.getloadavg()[0]:.2f} at start", "",
             f"{'features':<11} {'b':>4} {'method':<28} {'seconds':>8} {'log det (nats)':>15} {'same set as bmdal':>18} {'same order':>10}"]
    for name, phi in sets.items():
        sigma2 = float(phi.pow(2).sum(1).mean()) * 0.1  # noise a tenth of the mean prior variance
        sigma = math.sqrt(sigma2)
        for b in (10, 50, 200):
            t_ref, ref = timed(lambda: bmdal(phi, b, sigma))
            rows = [("bmdal_reg maxdet", t_ref, ref)]
            t, ours = timed(lambda: batchal.select("regression_maxdet", b, embeddings_N_D=phi, noise=sigma2).indices.tolist())
            rows.append(("batchal regression_maxdet", t, ours))
            if name == "K samples":
                noise = torch.full_like(means, sigma2)
                t, joint = timed(lambda: batchal.select("regression_batchbald", b, mean_N_K=means, var_N_K=noise).indices.tolist())
                rows.append(("batchal regression_batchbald", t, joint))
            for method, seconds, picks in rows:
                lines.append(f"{name:<11} {b:>4} {method:<28} {seconds:>8.3f} {log_det(phi, picks, sigma2):>15.4f} "
                             f"{len(set(picks) & set(ref)):>14}/{b:<3} {str(picks == ref):>10}")
            lines.append(f"{'':<11} {'':>4} {'speed ratio bmdal/batchal':<28} {t_ref / rows[1][1]:>8.2f}")
            if name == "last layer":  # TP-mode: given the 200 training points' features
                t_ref, ref = timed(lambda: bmdal(phi, b, sigma, train=last_train))
                t, ours = timed(lambda: batchal.select("regression_maxdet", b, embeddings_N_D=phi, noise=sigma2,
                                                       labelled_embeddings=last_train).indices.tolist())
                for method, seconds, picks in (("bmdal_reg maxdet TP-mode", t_ref, ref), ("batchal maxdet + labelled", t, ours)):
                    lines.append(f"{name:<11} {b:>4} {method:<28} {seconds:>8.3f} {log_det_given(phi, last_train, picks, sigma2):>15.4f} "
                                 f"{len(set(picks) & set(ref)):>14}/{b:<3} {str(picks == ref):>10}")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
