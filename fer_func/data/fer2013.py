"""Read FER2013 from any of the CSV layouts users have, check every row, and cache the decoded arrays.

Layouts (told apart by the header, never the file name; plain or gzip, told apart by the magic bytes):

* Kaggle ``fer2013.csv``        ``emotion,pixels,Usage``   -> train/val/test from ``Usage``
* ``icml_face_data.csv``        ``emotion, Usage, pixels`` -> the same (leading spaces are ignored)
* challenge ``train.csv``       ``emotion,pixels``         -> Training rows only: split into train/val/test
  by a seeded permutation (10% val, 10% test, FER2013's proportions), each part kept in file order
* challenge ``test.csv``        ``pixels``                 -> rejected: it has no labels

CSV structure is pandas' job (quoting, line endings); the 82 million pixel values are tokenized by
numpy in :mod:`fer_func.data.pixels`. Every bad row is found in one pass and reported together, so a
user fixes a file once instead of once per row. The decoded arrays are cached as an ``.npz`` keyed by
the file's path, size and mtime, which makes every load after the first near-instant.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fer_func import prng
from fer_func.data import cache
from fer_func.data.dataset import SPLITS, USAGES, DataError, FERData
from fer_func.data.pixels import NOT_INTEGER, NUM_PIXELS, OUT_OF_RANGE, WRONG_COUNT, describe_row, parse_pixels

DOWNLOAD = ("download fer2013.csv from https://www.kaggle.com/c/challenges-in-representation-learning-"
            "facial-expression-recognition-challenge/data and pass --data PATH (or load(PATH)), "
            "or train on the built-in faces with --data synthetic")


def not_found(path) -> str:
    """The one message for a missing data path (the CLI's early check and the loader both use it)."""
    return f"{path}: no such file or directory; {DOWNLOAD}"
FILE_NAMES = ("fer2013.csv", "fer2013.csv.gz", "icml_face_data.csv", "icml_face_data.csv.gz", "train.csv")
CACHE_VERSION = 1  # bump when the cached layout or the checks change
SPLIT_FRACTION = 0.1  # train.csv only: share of rows held out for val and for test each
_MAX_LISTED = 5


def find_file(path) -> Path:
    """``path`` itself, or for a directory the first FER2013 file inside it (torchvision's order)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for folder in (path, path / "fer2013"):
            for name in FILE_NAMES:
                if (folder / name).is_file():
                    return folder / name
        raise DataError(f"{path}: no FER2013 file in this directory (looked for {', '.join(FILE_NAMES)}); {DOWNLOAD}")
    if not path.is_file():
        raise DataError(not_found(path))
    return path


def _lines(rows: np.ndarray) -> str:
    """'lines 3, 7, 12 and 4 more' for 0-based data rows (line 1 is the header)."""
    shown = ", ".join(str(r + 2) for r in rows[:_MAX_LISTED])
    more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
    return f"line{'s' if len(rows) > 1 else ''} {shown}{more}"


def _read_table(path: Path) -> tuple[pd.DataFrame, str]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: looks gzip-compressed but cannot be decompressed ({e}); re-download it") from None
    header = raw.split(b"\n", 1)[0].decode("utf-8", errors="replace").strip().lstrip("\ufeff")
    if not header:
        raise DataError(f"{path}: the file is empty; {DOWNLOAD}")
    columns = [c.strip() for c in header.split(",")]
    if columns == ["pixels"]:
        raise DataError(f"{path}: header 'pixels' is the challenge's test.csv, which has no labels and cannot be "
                        f"trained or scored on; pass fer2013.csv, icml_face_data.csv or train.csv instead")
    missing = [c for c in ("emotion", "pixels") if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} "
                        f"(header is {header[:80]!r}); expected 'emotion,pixels,Usage' (fer2013.csv), "
                        f"'emotion, Usage, pixels' (icml_face_data.csv) or 'emotion,pixels' (train.csv)")
    # One spare column catches rows with too many fields; blank lines stay rows so line numbers hold.
    names = columns + ["_extra"]
    try:
        df = pd.read_csv(io.BytesIO(raw), header=None, skiprows=1, names=names, dtype=str, index_col=False,
                         keep_default_na=False, skipinitialspace=True, skip_blank_lines=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).strip()}); check the file or re-download it") from None
    df = df[(df != "").any(axis=1)]  # blank lines carry nothing; drop them silently
    if len(df) == 0:
        raise DataError(f"{path}: the file has a header but no data rows; {DOWNLOAD}")
    layout = "fer2013" if "Usage" in columns else "train.csv"
    return df, layout


def parse(path: Path, *, skip_bad_rows: bool = False) -> dict:
    """Decode and check every row: ``{"images", "labels", "usage" (-1 for train.csv), "skipped", "layout"}``."""
    df, layout = _read_table(path)
    row = df.index.to_numpy()  # 0-based data row (file line = row + 2)
    problems = []  # (description, bad mask)

    emotion = pd.to_numeric(df["emotion"].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad_label = ~np.isin(emotion, np.arange(7))
    if bad_label.any():
        first = df["emotion"].to_numpy()[bad_label][0]
        problems.append((f"emotion {first!r} is not a label 0-6 (0=Angry ... 6=Neutral)", bad_label))

    if layout == "fer2013":
        usage_str = df["Usage"].str.strip().to_numpy()
        usage = np.full(len(df), -1, np.int8)
        for i, name in enumerate(USAGES):
            usage[usage_str == name] = i
        bad_usage = usage < 0
        if bad_usage.any():
            problems.append((f"Usage {usage_str[bad_usage][0]!r} is not one of {', '.join(USAGES)}", bad_usage))
    else:
        usage = np.full(len(df), -1, np.int8)

    extra = df["_extra"].to_numpy() != ""
    if extra.any():
        problems.append((f"more fields than the header's {len(df.columns) - 1}", extra))

    strings = df["pixels"].tolist()
    pixels, status, count = parse_pixels(strings)
    for code, what in ((NOT_INTEGER, "non-integer pixel values"), (OUT_OF_RANGE, "pixel values outside 0..255"),
                       (WRONG_COUNT, f"a pixel count other than {NUM_PIXELS} (48x48)")):
        mask = status == code
        if mask.any():
            first = int(np.flatnonzero(mask)[0])
            problems.append((f"{what} (line {row[first] + 2}: {describe_row(strings[first])})", mask))

    bad = np.zeros(len(df), bool)
    for _, mask in problems:
        bad |= mask
    n_bad = int(bad.sum())
    if n_bad and not skip_bad_rows:
        detail = "; ".join(f"{_lines(row[mask])}: {what}" for what, mask in problems)
        raise DataError(f"{path}: {n_bad} bad row{'s' * (n_bad > 1)} of {len(df)} - {detail}. "
                        f"Fix or delete them, or pass skip_bad_rows=True (CLI: --skip-bad-rows) to drop them")
    if bad.all():
        raise DataError(f"{path}: all {len(df)} rows are bad ({problems[0][0]}); check that this is a FER2013 file")
    if n_bad:
        warnings.warn(f"{path}: skipped {n_bad} bad rows ({_lines(row[bad])})", stacklevel=3)
    good_pixels = status == 0  # rows whose pixels parsed: `pixels` holds exactly these, in order
    keep = ~bad
    return {"images": pixels[keep[good_pixels]], "labels": emotion[keep].astype(np.int64),
            "usage": usage[keep], "skipped": int(bad.sum()), "layout": layout}


def _parse_cached(path: Path, cache_dir, skip_bad_rows: bool) -> dict:
    st = path.stat()  # the key: this file, this size, this modification time, these options
    ident = f"{CACHE_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{skip_bad_rows}"
    file = cache.cache_path(cache_dir, f"fer2013-{hashlib.sha1(ident.encode()).hexdigest()[:16]}.npz")
    hit = cache.read(file)
    if hit is not None:
        return hit | {"skipped": int(hit["skipped"]), "layout": str(hit["layout"])}
    out = parse(path, skip_bad_rows=skip_bad_rows)
    cache.write(file, out)
    return out


def load_csv(path, *, seed: int = 0, skip_bad_rows: bool = False, cache_dir=None) -> FERData:
    """FER2013 from a CSV (or a directory holding one). ``cache_dir=False`` turns the cache off."""
    path = find_file(path)
    d = _parse_cached(path, cache_dir, skip_bad_rows)
    images, labels, usage = torch.from_numpy(d["images"]), torch.from_numpy(d["labels"]), torch.from_numpy(d["usage"])
    if d["layout"] == "fer2013":
        parts = {s: torch.nonzero(usage == i).flatten() for i, s in enumerate(SPLITS)}
        how = "Usage column"
    else:  # train.csv: every row is Training; hold out val and test by a seeded permutation
        n = len(labels)
        k = int(round(SPLIT_FRACTION * n))
        perm = prng.permutation(prng.key(seed), n)
        parts = {"val": perm[:k].sort().values, "test": perm[k:2 * k].sort().values, "train": perm[2 * k:].sort().values}
        how = f"train.csv split {1 - 2 * SPLIT_FRACTION:.0%}/{SPLIT_FRACTION:.0%}/{SPLIT_FRACTION:.0%} with seed {seed}"
    empty = [s for s in SPLITS if len(parts[s]) == 0]
    if empty:
        raise DataError(f"{path}: no rows for split{'s' * (len(empty) > 1)} {', '.join(empty)} "
                        f"(Usage values {', '.join(USAGES)} map to {', '.join(SPLITS)}); a full FER2013 file has all three")
    return FERData(images={s: images[i] for s, i in parts.items()}, labels={s: labels[i] for s, i in parts.items()},
                   source=f"FER2013 {path} ({how})", skipped_rows=d["skipped"], meta={"path": str(path), "layout": d["layout"]})
