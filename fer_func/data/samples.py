"""Write a per-class grid of sample images, to see what a dataset looks like before training on it.

    python -m fer_func.data.samples --data synthetic --out samples.png
    python -m fer_func.data.samples --data path/to/fer2013.csv --out real.png --per-class 12

One row per class (labelled with its name and training count), the first images of that class.
"""
from __future__ import annotations

import argparse
import sys

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from fer_func.data import DataError, load  # noqa: E402


def sample_grid(data, out, *, split="train", per_class=10):
    images, labels = data.split(split)
    counts = data.counts(split)
    fig, axes = plt.subplots(data.num_classes, per_class, figsize=(per_class * 0.9 + 1.4, data.num_classes * 0.95))
    for c, row in enumerate(axes):
        picks = images[labels == c][:per_class]
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(picks):
                ax.imshow(picks[j].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        row[0].set_ylabel(f"{data.class_names[c]}\n({counts[c]})", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{data.source}: {split} split", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Save a per-class grid of FER sample images.")
    ap.add_argument("--data", default="synthetic", help="'synthetic' or a path to a FER2013 CSV")
    ap.add_argument("--out", required=True, help="the PNG file to write")
    ap.add_argument("--split", default="train", choices=("train", "val", "test"))
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-bad-rows", action="store_true")
    args = ap.parse_args(argv)
    try:
        data = load(args.data, seed=args.seed, skip_bad_rows=args.skip_bad_rows)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sample_grid(data, args.out, split=args.split, per_class=args.per_class)
    print(f"wrote {args.out}: {data.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
