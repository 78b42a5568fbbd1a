"""``fer-func export`` and ``fer-func predict``: their own parser, reached from fer_func/cli.py.

As everywhere in the CLI, a user's mistake (missing file, unreadable image, a file of the wrong
kind, an unknown --variant) prints one line ``error: ...`` on stderr and exits 2, never a traceback.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from fer_func.config import ArgumentParser, ConfigError

_EPILOG = """\
examples:
  %(prog)s export runs/2026-01-01_12-00-00_lr --out model.pt           # best variant, state_dict
  %(prog)s export runs/2026-01-01_12-00-00_lr --variant ensemble --out lr.onnx
  %(prog)s predict model.pt face.jpg photos/ 'more/*.png' --csv predictions.csv
"""


def build_parser(prog: str = "fer-func") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=_EPILOG, description="Export a trained network and predict with it (docs/use.md).")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a run's network or ensemble to a file (+ FILE.json)",
                       description="Write a run's best-epoch network (or an ensemble) as one file plus FILE.json.")
    e.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory written by a training run (runs/<date>_<label>)")
    e.add_argument("--variant", default="best", metavar="ID|best|ensemble",
                   help="a variant id from results.json; 'best' (default: highest best-epoch val acc, as summary.md); "
                        "'ensemble': every non-diverged variant with the best one's architecture, softmax averaged")
    e.add_argument("--format", choices=("state_dict", "torchscript", "onnx"),
                   help="default from --out's suffix: .onnx -> onnx, .ts/.torchscript/.jit -> torchscript, else state_dict")
    e.add_argument("--out", type=Path, required=True, metavar="FILE", help="the file to write; FILE.json goes beside it")
    r = sub.add_parser("predict", help="class probabilities of image files",
                       description="Print the 7 class probabilities and the top class of every image.")
    r.add_argument("model", metavar="MODEL", type=Path, help="a file written by `export` (any format)")
    r.add_argument("images", metavar="IMAGE", nargs="+", help="image files, folders (their image files) or quoted globs")
    r.add_argument("--csv", type=Path, metavar="PATH", help="also write path, top class and probabilities as CSV")
    return p


def _export(args) -> int:
    from fer_func.use.export import export

    out, meta_path, meta = export(args.run_dir, args.out, args.variant, args.format)
    ids = meta["source"]["variants"]
    print(f"wrote {out} ({meta['format']}, {meta['kind']} of {len(ids)}: {', '.join(ids)}) and {meta_path}")
    for skipped in meta["left_out"]:
        print(f"  left out of the ensemble: {skipped['id']} ({skipped['why']})")
    return 0


def _predict(args) -> int:
    from fer_func.use.predict import predict_files

    model, paths, probs = predict_files(args.model, args.images)
    classes = model.meta["classes"]
    rows = []
    for path, p in zip(paths, probs.tolist()):
        top = max(range(len(p)), key=p.__getitem__)
        rows.append([str(path), classes[top], *p])
        print(f"{path}  {classes[top]}  " + "  ".join(f"{c}={x:.4f}" for c, x in zip(classes, p)))
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "top", *classes])
            w.writerows(rows)
        print(f"wrote {args.csv}", file=sys.stderr)
    return 0


def main(argv, prog: str = "fer-func") -> int:
    args = build_parser(prog).parse_args(argv)  # usage errors: one line "error: ..." and exit 2
    try:
        return _export(args) if args.command == "export" else _predict(args)
    except ConfigError as e:  # UseError included
        print(f"error: {e}", file=sys.stderr)
        return 2
