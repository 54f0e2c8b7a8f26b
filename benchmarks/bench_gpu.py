"""batchal on a CUDA GPU: BatchBALD at pool scale, pool scoring, and one round of the paper's protocol.

Three measurements, each printed with what it is compared against in the same run:

1. BatchBALD, N = 60,000, K = 100, C = 10, b = 10, 40,000 samples, no prefilter, the synthetic
   inputs of bench_batchbald.py (log_softmax(2 randn(N,1,C) + randn(N,K,C)), seed 0): seconds on
   the GPU (after a small warm-up selection) against the same selection on this machine's CPU,
   and whether the picks agree.
2. Pool scoring with the paper's MNIST CNN, K = 100 consistent MC-dropout masks, over the MNIST
   training images: images/s of ``predict_log_probs`` (the layers before the first dropout run
   once per image) against K plain forward passes of the same model.
3. One round of the paper's MNIST protocol (whole pool, K = 100 for acquisition and test, b = 10,
   BatchBALD): ``run_experiment`` to 40 labels, the seconds of train / evaluate / score / select
   of each round as the run rows record them.

Usage:  python benchmarks/bench_gpu.py [--out results/benchmarks] [--device cuda]
Needs:  a CUDA device and MNIST (../shared/data or $BATCHAL_DATA).
Writes: OUT/gpu.txt and OUT/gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import batchal
from batchal.acquisition.batchbald import BatchBALDWarning
from batchal.data import load_dataset
from batchal.experiment import ExperimentConfig, run_experiment
from batchal.models import create_model

sys.path.insert(0, str(Path(__file__).parent))
from bench_batchbald_scale import inputs as synthetic_inputs  # noqa: E402


def timed(fn, device):
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    return out, time.perf_counter() - start


def batchbald_figures(device, say):
    N, K, C, b, samples = 60_000, 100, 10, 10, 40_000
    lp = synthetic_inputs(N, K, C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BatchBALDWarning)
        # Warm-up: CUDA context, cuBLAS handles, kernels' first compilation.
        batchal.select("batchbald", b, log_probs_N_K_C=lp[:2000].to(device), num_samples=samples, seed=0)
        on_gpu = lp.to(device)
        gpu, gpu_s = timed(lambda: batchal.select("batchbald", b, log_probs_N_K_C=on_gpu, num_samples=samples, seed=0), device)
        gpu2, gpu2_s = timed(lambda: batchal.select("batchbald", b, log_probs_N_K_C=on_gpu, num_samples=samples, seed=0), device)
        cpu, cpu_s = timed(lambda: batchal.select("batchbald", b, log_probs_N_K_C=lp, num_samples=samples, seed=0), torch.device("cpu"))
    same = gpu.indices.tolist() == cpu.indices.tolist()
    shared = len(set(gpu.indices.tolist()) & set(cpu.indices.tolist()))
    info_gpu, info_cpu = float(gpu.scores[-1]), float(cpu.scores[-1])
    say(f"  GPU: {gpu_s:.2f} s (again: {gpu2_s:.2f} s); this machine's CPU ({torch.get_num_threads()} threads): {cpu_s:.2f} s; "
        f"CPU/GPU {cpu_s / gpu_s:.1f}x")
    say(f"  picks identical in order: {same}; shared as a set: {shared}/{b}; batch information GPU {info_gpu:.4f}, CPU {info_cpu:.4f} nats")
    say(f"  candidate evaluations {gpu.info.get('evaluations', 'n/a')}; exact picks {gpu.info.get('exact_picks')}")
    return {"N": N, "K": K, "C": C, "b": b, "num_samples": samples, "gpu_seconds": gpu_s, "gpu_seconds_again": gpu2_s,
            "cpu_seconds": cpu_s, "cpu_threads": torch.get_num_threads(), "identical_picks": same, "shared_picks": shared,
            "batch_information_gpu": info_gpu, "batch_information_cpu": info_cpu}


def scoring_figures(device, data, say, K=100, batch_size=512):
    torch.manual_seed(0)
    model = create_model("mnist_cnn", data.input_shape, data.num_classes).to(device)
    x = data.train_x
    N = len(x)
    batchal.predict_log_probs(model, x[:2048], K, batch_size, seed=0, device=device)  # warm-up
    _, mc_s = timed(lambda: batchal.predict_log_probs(model, x, K, batch_size, seed=0, device=device), device)
    big, big_s = timed(lambda: batchal.predict_log_probs(model, x, K, 4096, seed=0, device=device), device)

    @torch.no_grad()
    def plain():  # K ordinary forward passes of the whole network (dropout layers off), batch_size at a time
        model.eval()
        out = torch.empty(N, K, data.num_classes)
        for start in range(0, N, batch_size):
            xb = x[start : start + batch_size].to(device)
            out[start : start + batch_size] = torch.stack([torch.log_softmax(model(xb), 1) for _ in range(K)], 1).cpu()
        return out

    _, plain_s = timed(plain, device)
    say(f"  predict_log_probs, batch {batch_size}: {N / mc_s:,.0f} images/s ({N * K / mc_s:,.0f} image-samples/s), {mc_s:.2f} s for {N:,} images")
    say(f"  predict_log_probs, batch 4096: {N / big_s:,.0f} images/s ({big_s:.2f} s)")
    say(f"  K plain forward passes, batch {batch_size}: {N / plain_s:,.0f} images/s ({plain_s:.2f} s); predict_log_probs is {plain_s / mc_s:.1f}x faster")
    return {"N": N, "K": K, "batch_size": batch_size, "images_per_s": N / mc_s, "seconds": mc_s, "images_per_s_batch4096": N / big_s,
            "plain_images_per_s": N / plain_s, "plain_seconds": plain_s}


def round_figures(device, data, say):
    config = ExperimentConfig(dataset="mnist", strategy="batchbald", acquisition_size=10, initial_size=20, budget=40,
                              mc_samples=100, test_mc_samples=100, seed=0, device=str(device))
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_experiment(config, Path(tmp) / "run", data=data)
    out = []
    for row in rows:
        s = row["seconds"]
        say(f"  round {row['round']} ({row['labelled']} labels): train {s['train']:.2f} s, evaluate {s['evaluate']:.2f} s, "
            f"score {s['score']:.2f} s, select {s['select']:.2f} s; total {sum(s.values()):.2f} s; accuracy {row['test_accuracy']:.4f}")
        out.append({"round": row["round"], "labelled": row["labelled"], **s})
    return out


def main() -> None:
    from batchal.threads import use_threads

    use_threads()  # batchal's policy (1 thread unless BATCHAL_THREADS says otherwise); the header says how many
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: batchbald, scoring, round")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"no CUDA device here (torch {torch.__version__}); this benchmark needs one")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    say("batchal on a GPU (benchmarks/bench_gpu.py)")
    say(f"command: python benchmarks/bench_gpu.py {' '.join(sys.argv[1:])}".rstrip())
    say(f"device: {name}; torch {torch.__version__} (CUDA {torch.version.cuda}); {os.cpu_count()} CPU cores; "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d')}")
    say("")
    result = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_cores": os.cpu_count()}
    skip = set(filter(None, args.skip.split(",")))
    parts = [("batchbald", "1. BatchBALD, N = 60,000, K = 100, C = 10, b = 10, 40,000 samples, synthetic inputs, no prefilter",
              lambda: batchbald_figures(device, say)),
             ("scoring", "2. Pool scoring, the paper's MNIST CNN, K = 100, all MNIST training images",
              lambda: scoring_figures(device, data, say)),
             ("round", "3. One round of the paper's MNIST protocol (whole pool, K = 100, b = 10, BatchBALD), run_experiment to 40 labels",
              lambda: round_figures(device, data, say))]
    data = load_dataset("mnist") if {"scoring", "round"} - skip else None
    for key, title, measure in parts:
        if key in skip:
            continue
        say(title)
        try:
            result[key] = measure()
        except Exception as exc:  # one part failing still leaves the others' figures
            say(f"  FAILED: {type(exc).__name__}: {exc}")
            result[key] = {"error": f"{type(exc).__name__}: {exc}"}
        say("")
        (out / "gpu.txt").write_text("\n".join(lines) + "\n")
    (out / "gpu.txt").write_text("\n".join(lines) + "\n")
    (out / "gpu.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
