"""``fer-func export``, ``fer-func predict`` and ``fer-func demo``: their own parser, reached from fer_func/cli.py.

As everywhere in the CLI, a user's mistake (missing file, unreadable image, a file of the wrong
kind, an unknown --variant) prints one line ``error: ...`` on stderr and exits 2, never a traceback.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from fer_func.config import ArgumentParser, ConfigError
from fer_func.use import annotate

_EPILOG = """\
examples:
  %(prog)s export runs/2026-01-01_12-00-00_lr --out model.pt           # best variant, state_dict
  %(prog)s export runs/2026-01-01_12-00-00_lr --variant ensemble --out lr.onnx
  %(prog)s export runs/2026-01-01_12-00-00_search-tiny-tpe --out best_trial.pt2   # a search's best trial
  %(prog)s predict model.pt group.jpg photos/ --annotate boxed/      # every face found, boxes drawn
  %(prog)s predict model.pt2 'crops/*.png' --no-detect --csv predictions.csv
  %(prog)s demo model.pt                    # a page at http://127.0.0.1:7860: upload a photo, see its faces
"""


def build_parser(prog: str = "fer-func") -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=_EPILOG, description="Export a trained network, predict with it, or try it on a web page (docs/use.md).")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a run's network or ensemble to a file (+ FILE.json)",
                       description="Write a run's best-epoch network (or an ensemble) as one file plus FILE.json.")
    e.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run directory written by a training run (runs/<date>_<label>)")
    e.add_argument("--variant", default="best", metavar="ID|best|ensemble",
                   help="a variant id from results.json; 'best' (default: highest best-epoch val acc, as summary.md); "
                        "'ensemble': every non-diverged variant with the best one's architecture, softmax averaged")
    e.add_argument("--format", choices=("state_dict", "pt2", "safetensors", "torchscript", "onnx"),
                   help="default from --out's suffix: .pt2 -> pt2 (torch.export), .safetensors -> safetensors, "
                        ".onnx -> onnx, .ts/.torchscript/.jit -> torchscript (deprecated by torch), else state_dict")
    e.add_argument("--out", type=Path, required=True, metavar="FILE", help="the file to write; FILE.json goes beside it")
    r = sub.add_parser("predict", help="class probabilities of the faces in image files",
                       description="Find the faces in every image (OpenCV's Haar cascade) and print each face's box, "
                                   "7 class probabilities and top class; --no-detect: the whole image is one face.")
    r.add_argument("model", metavar="MODEL", type=Path, help="a file written by `export` (any format)")
    r.add_argument("images", metavar="IMAGE", nargs="+", help="image files, folders (their image files) or quoted globs")
    r.add_argument("--no-detect", action="store_true",
                   help="no face detection: each image is one face (centre square), for images already cropped like FER2013")
    r.add_argument("--json", action="store_true",
                   help='one JSON object per image: {"image", "faces": [{"box": [x,y,w,h], "probs", "label"}]}')
    r.add_argument("--annotate", type=Path, metavar="DIR", help="write each image with its boxes and labels drawn into DIR")
    r.add_argument("--csv", type=Path, metavar="PATH",
                   help="also write path, box x,y,w,h, top class and probabilities as CSV (one row per face)")
    d = sub.add_parser("demo", help="a web page to try a model on photos (upload or webcam)",
                       description="Serve a page where a photo (uploaded, or from the webcam) comes back with its faces "
                                   "boxed and a chart of each face's class probabilities. Needs pip install -e '.[demo]'.")
    d.add_argument("model", metavar="MODEL", type=Path, help="a file written by `export` (any format)")
    d.add_argument("--port", type=int, default=7860, metavar="P", help="the port to serve on (default 7860)")
    d.add_argument("--host", default="127.0.0.1", metavar="H",
                   help="the address to serve on (default 127.0.0.1: this machine only; 0.0.0.0: every network "
                        "this machine is on. Browsers allow the webcam only on localhost or https)")
    return p


def _export(args) -> int:
    from fer_func.use.export import export

    out, meta_path, meta = export(args.run_dir, args.out, args.variant, args.format)
    ids = meta["source"]["variants"]
    print(f"wrote {out} ({meta['format']}, {meta['kind']} of {len(ids)}: {', '.join(ids)}) and {meta_path}")
    for skipped in meta["left_out"]:
        print(f"  left out of the ensemble: {skipped['id']} ({skipped['why']})")
    if meta["format"] == "torchscript":
        print("note: torch deprecates TorchScript (torch.jit warns so since 2.14); for a file that later torch "
              "versions load, export with --format pt2 (torch.export) or safetensors", file=sys.stderr)
    return 0


def _predict(args) -> int:
    from fer_func.use.predict import predict_faces

    model, results = predict_faces(args.model, args.images, detect=not args.no_detect)
    classes = model.meta["classes"]
    rows, taken = [], set()
    for r in results:
        if args.json:
            print(json.dumps(r))
        elif not r["faces"]:
            print(f"{r['image']}  no face found")
        for face in r["faces"]:
            where = "" if args.no_detect else "  box=" + ",".join(map(str, face["box"]))
            if not args.json:  # --no-detect keeps the one-line-per-image form of earlier versions
                print(f"{r['image']}{where}  {face['label']}  " +
                      "  ".join(f"{c}={face['probs'][c]:.4f}" for c in classes))
            rows.append([r["image"], *face["box"], face["label"], *(face["probs"][c] for c in classes)])
        if not r["faces"]:
            rows.append([r["image"], *[""] * (5 + len(classes))])  # the image is listed even without a face
        if args.annotate is not None:
            annotate.draw(r, args.annotate, taken)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "x", "y", "w", "h", "top", *classes])
            w.writerows(rows)
        print(f"wrote {args.csv}", file=sys.stderr)
    if args.annotate is not None:
        print(f"wrote {len(taken)} annotated images to {args.annotate}", file=sys.stderr)
    return 0


def main(argv, prog: str = "fer-func") -> int:
    args = build_parser(prog).parse_args(argv)  # usage errors: one line "error: ..." and exit 2
    try:
        if args.command == "demo":
            from fer_func.use import demo
            demo.serve(args.model, args.host, args.port)
            return 0
        return _export(args) if args.command == "export" else _predict(args)
    except ConfigError as e:  # UseError included
        print(f"error: {e}", file=sys.stderr)
        return 2
