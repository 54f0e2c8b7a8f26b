"""`batchal score`: every per-point score of a streamed pool, as sharded Parquet, in-process or on Ray."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from batchal.cli.options import needs_pyarrow, split_list
from batchal.cli.summaries import SUMMARIES


def add_parser(sub) -> None:
    score = sub.add_parser("score", help=SUMMARIES["score"],
                           description="Every per-point score of a streamed pool, written as sharded Parquet; rerun to resume.")
    score.add_argument("pool", help="a folder of PNG/JPEG images, a .npy file [N, ...] or Parquet file(s)")
    score.add_argument("--model", required=True, help="a registered model (mnist_cnn, mlp, ...) or MODULE:FACTORY (package.module:fn or file.py:fn)")
    score.add_argument("--weights", help="the model's state dict (torch.save(model.state_dict(), FILE.pt))")
    score.add_argument("--num-classes", dest="num_classes", type=int, help="classes, for registered models")
    score.add_argument("--mc-samples", dest="mc_samples", type=int, default=20, help="MC-dropout samples K (default 20)")
    score.add_argument("--seed", type=int, default=0, help="seed of the K dropout masks (default 0)")
    score.add_argument("--out", required=True, help="output folder")
    score.add_argument("--embeddings", action="store_true", help="also write penultimate features and the prediction (badge, coreset)")
    score.add_argument("--keep-log-probs", dest="keep_log_probs", type=int, help="keep the K x C log-probabilities of the M items of highest BALD (batchbald)")
    score.add_argument("--shard-size", dest="shard_size", type=int, default=4096, help="items per shard (default 4096)")
    score.add_argument("--batch-size", dest="batch_size", type=int, default=256, help="items per forward pass (default 256)")
    score.add_argument("--image-size", dest="image_size", type=int, default=28, help="images are resized to this square size (default 28)")
    score.add_argument("--rgb", action="store_true", help="keep colour (default: grayscale)")
    score.add_argument("--column", help="Parquet: the column holding inputs (arrays) or image paths")
    score.add_argument("--input-shape", dest="input_shape", help="Parquet arrays: reshape each row, e.g. 1,28,28")
    score.add_argument("--ray", help="run on a Ray cluster: local, auto or HOST:PORT (default: in this process)")
    score.add_argument("--workers", type=int, help="with --ray: scoring actors (default: the cluster's CPUs / --cpus-per-worker)")
    score.add_argument("--cpus-per-worker", dest="cpus_per_worker", type=float, default=1.0, help="with --ray: CPUs (and torch threads) per actor")
    score.set_defaults(func=cmd_score)


def cmd_score(args: argparse.Namespace) -> int:
    needs_pyarrow("score")
    from batchal.distributed.scoring import ScoreJob, score_pool

    shape = split_list(args.input_shape, "--input-shape", int) if args.input_shape else None
    if args.weights is None and ":" not in str(args.model):
        print(f"batchal: warning: no --weights: {args.model} is scored as built, untrained; its scores are those of random "
              "weights (the manifest records weights_sha256: null)", file=sys.stderr)
    job = ScoreJob(pool=args.pool, model=args.model, weights=args.weights, mc_samples=args.mc_samples, seed=args.seed,
                   num_classes=args.num_classes, embeddings=args.embeddings, keep_log_probs=args.keep_log_probs,
                   shard_size=args.shard_size, batch_size=args.batch_size, image_size=args.image_size, grayscale=not args.rgb,
                   column=args.column, input_shape=shape)
    bar, start, resumed_items = None, time.perf_counter(), None

    def progress(done: int, total: int, items: int) -> None:
        nonlocal bar, resumed_items
        if resumed_items is None:  # the first call reports the shards a resumed job had already finished
            resumed_items = items
        rate = (items - resumed_items) / max(1e-9, time.perf_counter() - start)  # this call's items only
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            if bar is None:
                bar = tqdm(total=total, desc="scoring", unit="shard", file=sys.stderr)
            bar.n = done
            bar.set_postfix(items=items, items_per_s=f"{rate:.0f}")
            bar.refresh()
        else:
            print(f"scored {done}/{total} shards, {items} items ({rate:.0f} items/s)", flush=True)

    try:
        manifest = score_pool(job, args.out, ray_address=args.ray, workers=args.workers, cpus_per_worker=args.cpus_per_worker, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"{manifest['pool']['items']} items scored into {args.out} ({manifest['shards']} shards)"
          + (f"; {manifest['kept']} kept with their log-probabilities" if "kept" in manifest else ""))
    skipped = manifest.get("skipped") or []
    if skipped:
        shown = ", ".join(entry["id"] for entry in skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        print(f"{len(skipped)} unreadable image(s) skipped: {shown} (all of them, with why, in {Path(args.out) / 'manifest.json'})")
    return 0

