"""Memory that obeys its bound: each case runs in a fresh process, which builds its input, resets
the kernel's peak-RSS counter (/proc/self/clear_refs) and reports how far the selection's peak
rose above the memory it held before (VmHWM - VmRSS, in MiB)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")

PRELUDE = r"""
import gc, torch, batchal

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

def peak_above(fn, warm_up):
    warm_up()  # code paths and libraries loaded on first use are not the selection's memory
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as exc:  # a sandbox that forbids it: the test skips, saying why
        print("SKIP", exc)
        return
    before = status("VmRSS")
    fn()
    print(status("VmHWM") - before)
"""

CASES = {
    "batchbald": r"""
g = torch.Generator().manual_seed(0)
N, K, C = 100_000, 50, 10
lp = torch.log_softmax(torch.randn(N, 1, C, generator=g) * 3 + torch.randn(N, K, C, generator=g), 2).float()
peak_above(lambda: batchal.select("batchbald", 4, log_probs_N_K_C=lp, seed=0, memory_bytes=32 * 2**20, num_samples=2_000),
           lambda: batchal.select("batchbald", 4, log_probs_N_K_C=lp[:500], seed=0, memory_bytes=32 * 2**20, num_samples=2_000))
""",
    "segmentation_batchbald": r"""
g = torch.Generator().manual_seed(0)
lp = torch.log_softmax(torch.randn(200, 20, 4, 8, 8, generator=g), 2)
peak_above(lambda: batchal.select("segmentation_batchbald", 10, log_probs_N_K_C_H_W=lp, seed=0, memory_bytes=128 * 2**20, pixels=None,
                                  num_samples=4_000),
           lambda: batchal.select("segmentation_batchbald", 2, log_probs_N_K_C_H_W=lp[:4], seed=0, pixels=4, num_samples=100))
""",
    "badge": r"""
g = torch.Generator().manual_seed(0)
N, D, C = 200_000, 512, 10
emb = torch.randn(N, D, generator=g)
lp = torch.log_softmax(torch.randn(N, 1, C, generator=g), 2)
peak_above(lambda: batchal.select("badge", 10, log_probs_N_K_C=lp, embeddings_N_D=emb, seed=0),
           lambda: batchal.select("badge", 10, log_probs_N_K_C=lp[:100], embeddings_N_D=emb[:100], seed=0))
""",
    "epig": r"""
g = torch.Generator().manual_seed(0)
N, T, K, C = 3, 64, 4, 1000
lp = torch.log_softmax(torch.randn(N, K, C, generator=g), 2)
targets = torch.log_softmax(torch.randn(T, K, C, generator=g), 2)
peak_above(lambda: batchal.select("epig", 2, log_probs_N_K_C=lp, target_log_probs=targets, seed=0),
           lambda: batchal.select("epig", 2, log_probs_N_K_C=lp[:, :, :10].log_softmax(2), target_log_probs=targets[:4, :, :10].log_softmax(2), seed=0))
""",
}


def peak_mib(case: str) -> float:
    done = subprocess.run([sys.executable, "-c", PRELUDE + CASES[case]], capture_output=True, text=True, timeout=600,
                          # A fixed mmap threshold: freed large blocks go back to the system, so RSS is what is in use.
                          env={"BATCHAL_THREADS": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "MALLOC_MMAP_THRESHOLD_": "131072"})
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    if last.startswith("SKIP"):
        pytest.skip(f"cannot reset the peak-RSS counter here ({last[5:]})")
    return float(last)


def test_batchbald_stays_within_memory_bytes_above_its_input():
    # N = 100,000, K = 50, C = 10 (200 MB of float32 input), memory_bytes = 32 MiB covers all it holds.
    assert peak_mib("batchbald") <= 32


def test_segmentation_batchbald_stays_within_memory_bytes_above_its_input():
    # Every pixel of 200 8 x 8 masks, 4,000 draws: the N x S x K draws (122 MiB) and the work within 128 MiB.
    assert peak_mib("segmentation_batchbald") <= 128


def test_badge_peak_is_its_factorised_embeddings_plus_a_constant():
    # 200,000 x 512 float32 features: N (C + D) float64 is 797 MiB; the stated constant is 64 MiB.
    assert peak_mib("badge") <= 200_000 * (10 + 512) * 8 / 2**20 + 64  # measured here: 816 MiB


def test_epig_chunks_its_joint_at_a_thousand_classes():
    # C = 1,000, 64 targets: one candidate's joint would be 1000 x 64,000 float64 (488 MiB) unchunked.
    assert peak_mib("epig") <= 64  # measured here: 27 MiB
