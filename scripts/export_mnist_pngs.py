"""Write MNIST test images as PNG files, for trying `batchal label` on real images.

Usage: python scripts/export_mnist_pngs.py OUT_DIR [--count 300] [--data-dir ../shared/data]
Files are named NNNNN.png (the test-set index); the true labels go to OUT_DIR/../<name>-truth.csv,
outside the image folder, so you can check your labels afterwards.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from batchal.data.datasets import FILESETS
from batchal.data.files import find_file, parse_idx, read_bytes, search_roots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    fileset = FILESETS["mnist"]
    files = {f.name: f for f in fileset.files}
    arrays = {}
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        path = find_file(fileset, files[name], search_roots(args.data_dir))
        if path is None:
            raise SystemExit(f"MNIST file {name}(.gz) not found; pass --data-dir (e.g. ../shared/data)")
        arrays[name] = parse_idx(read_bytes(path), path)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = [ "file,label"]
    for i in range(min(args.count, len(arrays["t10k-labels-idx1-ubyte"]))):
        Image.fromarray(np.asarray(arrays["t10k-images-idx3-ubyte"][i])).save(out / f"{i:05d}.png")
        truth.append(f"{i:05d}.png,{int(arrays['t10k-labels-idx1-ubyte'][i])}")
    (out.parent / f"{out.name}-truth.csv").write_text("\n".join(truth) + "\n")
    print(f"wrote {len(truth) - 1} PNG files to {out} and their labels to {out.parent / (out.name + '-truth.csv')}")


if __name__ == "__main__":
    main()
