"""Reproduce the papers' experiments with batchal, resumably, and write their reports.

Usage: python scripts/reproduce.py STUDY [--data-dir ../shared/data] [--out results] [--seeds 0,1,2] [--workers 2] [--device cuda] [--report-only]

Studies (each a list of `batchal run` configurations; the CPU protocol is stated in
results/README.md next to every deviation from the papers):
  mnist           BatchBALD paper, MNIST b=10: batchbald, bald, random to 300 labels.
  repeated-mnist  Repeated MNIST b=10: batchbald, bald, random, variation_ratios, mean_std.
  mnist-sweep     MNIST acquisition-size sweep: batchbald and bald at b = 5, 10, 40.
  badge-study     BADGE comparison on letter (MLP), fashion-mnist and digits, two batch sizes.
  mnist-paper           The BatchBALD paper's own protocol (a GPU job): MNIST b=10, whole pool, K = 100
                        for acquisition and test, batchbald, bald, random, 6 seeds, to 300 labels.
  repeated-mnist-paper  Its Repeated MNIST: b=10, whole pool, K = 10, 40 epochs at most, 6 seeds, 300 labels.
  mnist-sweep-paper     Its acquisition-size sweep on the whole pool: batchbald and bald at b = 5, 20, 40
                        (2 seeds; b = 10 is mnist-paper's runs).
  badge-paper     BADGE's own protocol (REFERENCE.md 4b): letter, MNIST and CIFAR-10 (the JPEG copy) with the
                  paper's MLP at b = 100, 1,000 and 10,000; badge, albl, coreset, least_confidence (Conf),
                  margin (Marg), entropy and random; 100 random initial labels, trained from scratch to 99%
                  training accuracy each round; budgets capped (BADGE_PAPER_BUDGETS: 1,100 / 5,100 / 20,100 labels) for CPU time.
  badge-paper-kdpp  BADGE's Figure 1: k-DPP sampling on the gradient embedding (strategy kdpp) by badge-paper's
                  protocol at b = 100 on letter, MNIST and CIFAR-10, 5 repeats; scripts/badge_sampler.py compares it with
                  badge-paper's BADGE runs (accuracy and selection time) and reports the batch diagnostics.
  badge-paper-epochs  What badge-paper's 300-epoch safety cap does where it binds most: letter b = 100,
                  its 7 algorithms (BADGE, Marg, Coreset and Rand first), 3 repeats, with a cap of 3,000 epochs
                  (scripts/epoch_cap_effect.py compares them with badge-paper's runs).
  batchbald-faithful-cpu  The faithful mode on the CPU protocol (5,000-point pool subsample, K = 50): the
                  fixed 20 initial indices, the paper's epoch sampler, stop at 0.96; BatchBALD and BALD b = 10;
                  3 seeds. Shows the direction only (labelled so in results/README.md).
  badge-paper-gpu (a GPU job) BADGE's architectures: CIFAR-10 at b = 1,000 with the narrow ResNet-18
                  and VGG16, random, margin, coreset and badge, 3 repeats, by badge-paper's protocol.
  batchbald-faithful  (a GPU job) The BatchBALD paper's code as its logs show it: the fixed 20 initial
                  indices for every seed, epochs of randperm(5056) % n, stop at 0.96; BatchBALD and BALD
                  b = 10, BALD b = 1, Repeated MNIST random b = 5; 6 seeds.
  new-strategies  EPIG, PowerEPIG, Cluster-Margin, TypiClust and BALD on a deep ensemble, against
                  BatchBALD, BALD, BADGE and random: letter b=25 (the BADGE study's protocol; its
                  runs of the older strategies are reused) and MNIST b=10 (the CPU protocol; study
                  (a)'s runs reused), each new run resumable like the rest.

The paper-protocol studies take `--device cuda`; scripts/gpu_paper_protocol.sh runs them side by
side on one GPU.

Every run appends to its own results.jsonl, so stopping and rerunning the same command
continues where it stopped. `--workers N` runs the study in N processes (each with
one thread, batchal's policy, or $BATCHAL_THREADS) that share the runs: a run in progress is locked, the others skip it and go
on with the next one; the same command started by hand in several shells does the same. The
report goes to OUT/STUDY/report/ (with --workers, once every worker has finished; processes
started by hand each write it when they reach the end of the list).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from batchal.data import load_dataset
from batchal.experiment import ExperimentConfig, run_experiment
from batchal.run_files import RunInUseError
from batchal.report import write_report
from batchal.threads import resolve_threads, use_threads
from batchal.training import TrainConfig

# CPU protocol shared by the MNIST studies: the paper's model, training and counting, but a
# random 5,000-point pool subsample per round and fewer MC samples (see results/README.md).
MNIST_CPU = dict(pool_subsample=5_000, mc_samples=50, test_mc_samples=10, initial_size=20, budget=300)
# The paper's protocol (REFERENCE.md section 5): the whole pool, K = 100 for acquisition and test.
MNIST_PAPER = dict(pool_subsample=None, mc_samples=100, test_mc_samples=100, initial_size=20, budget=300)

BADGE_STRATEGIES = ["badge", "bald", "batchbald", "power_bald", "coreset", "kdpp", "margin", "entropy", "least_confidence", "random"]


# Default seeds per study: the MNIST table and the BADGE study need several; on 2 CPU cores
# the Repeated MNIST study and the sweep get one (results/README.md says so).
DEFAULT_SEEDS = {"batchbald-faithful": "0,1,2,3,4,5", "batchbald-faithful-cpu": "0,1,2", "badge-paper": "0,1,2,3,4", "badge-paper-epochs": "0,1,2", "badge-paper-kdpp": "0,1,2,3,4", "badge-paper-gpu": "0,1,2", "mnist": "0,1,2", "repeated-mnist": "0", "mnist-sweep": "0", "badge-study": "0,1,2", "new-strategies": "0,1,2",
                 "mnist-paper": "0,1,2,3,4,5", "repeated-mnist-paper": "0,1,2,3,4,5", "mnist-sweep-paper": "0,1"}
PAPER_STUDIES = ("mnist-paper", "repeated-mnist-paper", "mnist-sweep-paper")

NEW_STRATEGIES = ["epig", "power_epig", "cluster_margin", "typiclust"]

# BADGE study, CPU protocol: (data set, initial labels, two batch sizes, budget, pool subsample).
BADGE_SETTINGS = [("digits", 20, (10, 25), 120, None), ("letter", 100, (25, 50), 300, 5_000), ("fashion-mnist", 100, (25, 50), 300, 5_000)]


# BADGE's protocol: the paper's 7 algorithms, its MLP, its training rule (REFERENCE.md 4b).
BADGE_PAPER_STRATEGIES = ["badge", "albl", "coreset", "least_confidence", "margin", "entropy", "random"]
# Label budgets (initial 100 included), capped for CPU time: b = 100 to 1,100 labels (10 rounds),
# b = 1,000 to 5,100 (5 rounds), b = 10,000 to 20,100 (3 rounds, the checkpoints 100, 100 + b and
# 100 + 2b; letter's pool ends at 16,000). A budget may grow later on the same runs (40,100 is the
# next checkpoint at b = 10,000); the report cuts every setting at its common cap.
BADGE_PAPER_BUDGETS = {100: 1_100, 1_000: 5_100, 10_000: 20_100}
# The safety cap on epochs per round (the authors' code has none); rows record when it was hit.
BADGE_PAPER_MAX_EPOCHS = 300
# Cheapest settings first (measured on the CPU: letter b = 10,000 was run first, before this order), so
# that whole settings finish early; MNIST and CIFAR-10 at b = 10,000 (10,000 sequential k-means++ or
# k-centre picks over 60,000 points per round) come last.
BADGE_PAPER_ORDER = [("letter", 10_000), ("letter", 100), ("letter", 1_000), ("mnist", 100), ("mnist", 1_000),
                     ("cifar10", 100), ("cifar10", 1_000), ("mnist", 10_000), ("cifar10", 10_000)]


# What the safety cap does where it binds most (letter b = 100, most rounds at the cap): the same runs
# with a cap 10 times higher, BADGE, Marg, Coreset and Rand first (scripts/epoch_cap_effect.py compares).
BADGE_EPOCHS_STUDY_CAP = 3_000


def badge_paper_config(dataset: str, b: int, strategy: str, seed: int, device: str = "cpu", model: str = "badge_mlp",
                       max_epochs: int = BADGE_PAPER_MAX_EPOCHS) -> ExperimentConfig:
    budget = min(BADGE_PAPER_BUDGETS[b], 16_000) if dataset == "letter" else BADGE_PAPER_BUDGETS[b]
    return ExperimentConfig(
        dataset=dataset, strategy=strategy, acquisition_size=b, seed=seed, initial_size=100, initial_selection="random",
        budget=budget, validation_size=0, mc_samples=1, test_mc_samples=1, model=model, device=device,
        eval_batch_size=2048,
        train=TrainConfig(lr=1e-4, batch_size=64, sampler="pass", until_accuracy=0.99, grad_clamp=0.1,
                          max_epochs=max_epochs),
    )


def study(name: str, seeds: list[int], device: str = "cpu") -> list[ExperimentConfig]:
    if name == "batchbald-faithful":
        # The paper's code as its run logs show it (REFERENCE.md 5b): one fixed initial set for every
        # seed, epochs of randperm(5056) % n, stop at 0.96 accuracy (300 acquired at most); then the
        # rows the paper reports that were never run here: BALD b = 1, Repeated MNIST random at b = 5.
        faithful = dict(MNIST_PAPER, initial_indices="batchbald-paper", target_accuracy=0.96, budget=320)
        train = TrainConfig(sampler="paper")
        configs = [ExperimentConfig(dataset="mnist", strategy=s, acquisition_size=10, seed=seed, device=device, train=train, **faithful)
                   for seed in seeds for s in ("batchbald", "bald")]
        configs += [ExperimentConfig(dataset="mnist", strategy="bald", acquisition_size=1, seed=seed, device=device, train=train,
                                     **faithful) for seed in seeds]
        configs += [ExperimentConfig(dataset="repeated-mnist", strategy="random", acquisition_size=5, seed=seed, device=device,
                                     **{**MNIST_PAPER, "mc_samples": 10, "test_mc_samples": 10}, train=TrainConfig(max_epochs=40))
                    for seed in seeds]
        return configs
    if name == "badge-paper":
        # Three repeats of every setting first (the fewest the issue accepts), then the rest: on the
        # CPU, as many settings as possible enter the penalty matrix.
        blocks = [s for s in (seeds[:3], seeds[3:]) if s]
        return [badge_paper_config(d, b, s, seed, device) for block in blocks for d, b in BADGE_PAPER_ORDER
                for seed in block for s in BADGE_PAPER_STRATEGIES]
    if name == "badge-paper-kdpp":
        # BADGE's Figure 1: k-DPP sampling against k-means++ (BADGE) on the same gradient embeddings, by
        # badge-paper's protocol at b = 100 (k-DPP's swap chain costs O(b^2) per step and 5 b ln b
        # steps: b = 1,000 is out of reach on the CPU); BADGE's runs are badge-paper's.
        return [badge_paper_config(d, 100, "kdpp", seed, device) for d in ("letter", "mnist", "cifar10") for seed in seeds]  # one data load each
    if name == "badge-paper-epochs":
        groups = (("badge", "margin", "coreset", "random"), ("albl", "least_confidence", "entropy"))  # the first four first
        return [badge_paper_config("letter", 100, s, seed, device, max_epochs=BADGE_EPOCHS_STUDY_CAP) for group in groups
                for seed in seeds for s in group]
    if name == "batchbald-faithful-cpu":
        # The faithful mode's direction on the CPU protocol (study (a)'s 5,000-point pool subsample,
        # K = 50): the paper's fixed 20 initial indices for every seed, its epoch sampler, stop at
        # 0.96; BatchBALD and BALD b = 10. Compared with study (a), whose seeds draw balanced sets.
        faithful = dict(MNIST_CPU, initial_indices="batchbald-paper", target_accuracy=0.96, budget=320)
        return [ExperimentConfig(dataset="mnist", strategy=s, acquisition_size=10, seed=seed, device=device,
                                 train=TrainConfig(sampler="paper"), **faithful) for seed in seeds for s in ("batchbald", "bald")]
    if name == "badge-paper-gpu":
        # BADGE's architectures on CIFAR-10 (the JPEG copy) at b = 1,000: the narrow ResNet-18 and
        # VGG16, Rand, Marg, Coreset and BADGE, 3 repeats (a GPU job).
        return [badge_paper_config("cifar10", 1_000, s, seed, device, model=m) for seed in seeds
                for m in ("resnet18_narrow", "vgg16") for s in ("random", "margin", "coreset", "badge")]
    if name == "mnist-paper":
        return [ExperimentConfig(dataset="mnist", strategy=s, acquisition_size=10, seed=seed, device=device, **MNIST_PAPER)
                for seed in seeds for s in ("batchbald", "bald", "random")]
    if name == "repeated-mnist-paper":
        return [ExperimentConfig(dataset="repeated-mnist", strategy=s, acquisition_size=10, seed=seed, device=device,
                                 **{**MNIST_PAPER, "mc_samples": 10, "test_mc_samples": 10}, train=TrainConfig(max_epochs=40))
                for seed in seeds for s in ("batchbald", "bald", "random")]
    if name == "mnist-sweep-paper":
        # b = 20 and 40 first: fewer rounds each, so the sweep's ends come back before b = 5.
        return [ExperimentConfig(dataset="mnist", strategy=s, acquisition_size=b, seed=seed, device=device, **MNIST_PAPER)
                for b in (40, 20, 5) for seed in seeds for s in ("batchbald", "bald")]
    if name == "mnist":
        return [ExperimentConfig(dataset="mnist", strategy=s, acquisition_size=10, seed=seed, **MNIST_CPU)
                for seed in seeds for s in ("batchbald", "bald", "random")]
    if name == "repeated-mnist":
        # The paper's K = 10 for Repeated MNIST and 40 epochs at most; 150 labels (CPU time).
        # The pool subsample takes whole groups of copies (experiment.subsample_pool).
        return [ExperimentConfig(dataset="repeated-mnist", strategy=s, acquisition_size=10, seed=seed,
                                 **{**MNIST_CPU, "mc_samples": 10, "budget": 150}, train=TrainConfig(max_epochs=40))
                for seed in seeds for s in ("batchbald", "bald", "random", "variation_ratios", "mean_std")]
    if name == "mnist-sweep":
        # b = 10 is study (a)'s runs (results/mnist/runs), read by this study's report.
        # BatchBALD at b = 40 on one core: its sampled regime (36 of the 40 picks) with 40,000
        # configurations over 5,000 candidates took over 10 minutes per round, so there only the
        # 1,000 points of highest BALD score compete and 10,000 configurations are sampled.
        # Last, a check of why BALD does not degrade with b on the CPU protocol: b = 40 on the
        # paper's full pool (no subsample), where BALD's top 40 can hold near-duplicates.
        b40 = {"prefilter": 1_000, "num_samples": 10_000}
        return [ExperimentConfig(dataset="mnist", strategy=s, acquisition_size=b, seed=seed,
                                 **{**MNIST_CPU, **({"pool_subsample": None} if full else {})},
                                 **(b40 if (s, b) == ("batchbald", 40) else {}))
                for full, sizes in ((False, (40, 5)), (True, (40,))) for seed in seeds for b in sizes
                for s in ("bald", "batchbald")]
    if name == "badge-study":
        # BADGE's protocol: random initial labels (class-balanced here), a fresh model each round.
        configs = []
        for dataset, initial, sizes, budget, subsample in BADGE_SETTINGS:
            for b in sizes:
                for seed in seeds:
                    for s in BADGE_STRATEGIES:
                        configs.append(ExperimentConfig(
                            dataset=dataset, strategy=s, acquisition_size=b, seed=seed, initial_size=initial,
                            budget=budget, mc_samples=20, test_mc_samples=10, num_samples=1_000, prefilter=200,
                            pool_subsample=subsample, validation_size=None, model="mlp",
                        ))
        return configs
    if name == "new-strategies":
        letter = dict(dataset="letter", acquisition_size=25, initial_size=100, budget=300, mc_samples=20, test_mc_samples=10,
                      num_samples=1_000, prefilter=200, pool_subsample=5_000, model="mlp")
        configs = [ExperimentConfig(strategy=s, seed=seed, **letter) for seed in seeds for s in NEW_STRATEGIES]
        configs += [ExperimentConfig(strategy="bald", seed=seed, posterior="ensemble", members=5, **letter) for seed in seeds]
        configs += [ExperimentConfig(dataset="mnist", strategy=s, acquisition_size=10, seed=seed, **MNIST_CPU)
                    for seed in seeds for s in NEW_STRATEGIES + ["badge"]]
        return configs
    raise SystemExit(f"unknown study {name!r}; choose mnist, repeated-mnist, mnist-sweep, badge-study, new-strategies, "
                     f"badge-paper, badge-paper-epochs, badge-paper-gpu, batchbald-faithful, batchbald-faithful-cpu, {', '.join(PAPER_STUDIES)}")


def run_name(config: ExperimentConfig) -> str:
    """The run folder's name; MNIST runs off the CPU protocol's pool subsample and ensemble runs say so."""
    full = config.dataset in ("mnist", "repeated-mnist") and config.pool_subsample is None
    ensemble = f"-ensemble{config.members}" if config.posterior == "ensemble" else ""
    architecture = f"-{config.model}" if config.model in ("resnet18_narrow", "vgg16") else ""  # badge-paper-gpu
    return f"{config.strategy}-b{config.acquisition_size}-seed{config.seed}" + ("-full-pool" if full else "") + ensemble + architecture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the study's, see DEFAULT_SEEDS)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--device", default="cpu", help="where the runs train, score and select (cpu, cuda, cuda:N)")
    parser.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)  # a worker of --workers
    parser.add_argument("--only", action="append", default=[], metavar="FIELD=VALUE",
                        help="run only the configurations with this field value, e.g. acquisition_size=40 (repeatable)")
    parser.add_argument("--workers", type=int, default=1,
                        help="run the study in this many processes sharing the runs, each with cores / workers threads "
                        "(the report is written once all have finished)")
    args = parser.parse_args()
    if args.workers < 1:
        raise SystemExit(f"--workers must be at least 1; got {args.workers}")
    use_threads()  # batchal's policy: 1 thread per process unless BATCHAL_THREADS says otherwise
    if args.workers > 1 and not args.report_only:
        threads = str(resolve_threads())
        child = [args.study, "--out", args.out, "--no-report"]
        child += ["--data-dir", args.data_dir] if args.data_dir else []
        child += ["--seeds", args.seeds] if args.seeds else []
        child += ["--device", args.device]
        child += [part for condition in args.only for part in ("--only", condition)]
        env = {**os.environ, "BATCHAL_THREADS": threads, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        workers = [subprocess.Popen([sys.executable, __file__, *child], env=env) for _ in range(args.workers)]
        codes = [w.wait() for w in workers]
        if any(codes):
            raise SystemExit(f"a worker failed (exit codes {codes}); rerun the same command to resume")
        args.report_only = True
    seeds = [int(s) for s in (args.seeds or DEFAULT_SEEDS.get(args.study, "0")).split(",")]
    root = Path(args.out) / args.study
    configs = study(args.study, seeds, args.device)
    for condition in args.only:
        field, _, value = condition.partition("=")
        configs = [c for c in configs if str(getattr(c, field, None)) == value]
    if not args.report_only:
        cache = {}
        for n, config in enumerate(configs, 1):
            config.data_dir = args.data_dir
            key = (config.dataset, config.copies)
            if key not in cache:
                cache.clear()
                cache[key] = load_dataset(config.dataset, args.data_dir, copies=config.copies)
            run_dir = root / "runs" / config.dataset / run_name(config)
            start = time.time()
            try:
                rows = run_experiment(config, run_dir, data=cache[key])
            except RunInUseError:
                # Another worker on the same study holds this run: go on with the next one, so
                # that the same command started twice splits the runs between them.
                print(f"[{n}/{len(configs)}] {run_dir}: running in another process, skipped", flush=True)
                continue
            print(f"[{n}/{len(configs)}] {run_dir}: {len(rows)} rounds, final accuracy {rows[-1]['test_accuracy']:.4f} "
                  f"({time.time() - start:.0f} s this call)", flush=True)
    if args.no_report:
        return
    thresholds = [0.9, 0.95] if "mnist" in args.study or "batchbald" in args.study else [0.6, 0.7, 0.8]
    sources = [root / "runs"]
    if not sources[0].exists():
        raise SystemExit(f"{sources[0]}: no runs yet; run the study first (without --report-only)")
    if args.study == "mnist-sweep" and (Path(args.out) / "mnist" / "runs").exists():
        sources.append(Path(args.out) / "mnist" / "runs")  # the b = 10 runs of study (a)
    if args.study == "mnist-sweep-paper" and (Path(args.out) / "mnist-paper" / "runs").exists():
        sources.append(Path(args.out) / "mnist-paper" / "runs")  # its b = 10 runs
    if args.study == "new-strategies":
        # The older strategies' runs under the same protocols: letter b = 25 from the BADGE study, MNIST from study (a).
        thresholds = [0.6, 0.7, 0.8, 0.9, 0.95]  # letter reaches the first ones, MNIST the last
        old = Path(args.out) / "badge-study" / "runs" / "letter"
        sources += sorted(p for p in old.glob("*-b25-seed*") if p.name.split("-")[0] in ("batchbald", "bald", "badge", "random"))
        if (Path(args.out) / "mnist" / "runs").exists():
            sources.append(Path(args.out) / "mnist" / "runs")
    print("report:", write_report(sources, root / "report", thresholds, title=f"batchal reproduction: {args.study}"))


if __name__ == "__main__":
    sys.exit(main())
