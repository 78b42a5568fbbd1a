"""Image files -> uint8 (N, 48, 48) grayscale, the form of a FER2013 image.

FER2013 images are 48x48 8-bit grayscale face crops, square and centred on the face. An input of
any size, mode or format is brought to that form the same way every time:

    EXIF orientation applied -> grayscale ("L": ITU-R 601-2 luma, alpha dropped)
    -> centre crop to a square (a face is not stretched) -> resize to 48x48, Pillow's bilinear filter

Pillow's bilinear resize widens its kernel when it shrinks an image (it antialiases), so a large
photo is averaged down rather than sampled. This is the whole-image path (``predict --no-detect``);
faces.py finds the faces in a photo and hands each face's square to ``to_fer``.
"""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch

from fer_func.use.errors import UseError

SIZE = 48
SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
DESCRIPTION = ("any image file -> EXIF orientation -> grayscale (PIL 'L') -> centre crop to a square -> "
               "48x48 (PIL bilinear, antialiased) -> uint8 / 255")


def expand(args) -> list[Path]:
    """Files from the command line: a file as given, a folder's image files (sorted), a quoted glob's matches."""
    files = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
            if not found:
                raise UseError(f"{path}: no image files in this folder (looked for {', '.join(SUFFIXES)})")
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(arg):
            found = sorted(Path(p) for p in glob.glob(arg) if Path(p).is_file())
            if not found:
                raise UseError(f"{arg}: the pattern matches no file; check the folder and the pattern")
            files += found
        else:
            raise UseError(f"image {arg!r} not found; check the path (a folder or a quoted glob like 'faces/*.jpg' works too)")
    return files


def open_gray(path):
    """One file as a full-size grayscale PIL image ("L"), upright (EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return ImageOps.exif_transpose(img).convert("L")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UseError(f"{path}: not a readable image ({type(e).__name__}: {e}); give a PNG, JPEG or another "
                       f"format Pillow opens") from None


def centre_box(img) -> list[int]:
    """The centred square ``[x, y, w, h]`` that ``read`` keeps of an image (the whole-image "face")."""
    side = min(img.size)
    return [(img.width - side) // 2, (img.height - side) // 2, side, side]


def to_fer(img) -> np.ndarray:
    """A grayscale PIL image (already the face's square) as uint8 (48, 48): Pillow's antialiased bilinear."""
    from PIL import Image, ImageOps

    img = ImageOps.fit(img, (SIZE, SIZE), method=Image.Resampling.BILINEAR, centering=(0.5, 0.5))
    return np.asarray(img, dtype=np.uint8)


def read(path) -> np.ndarray:
    """One file as a uint8 (48, 48) array."""
    return to_fer(open_gray(path))


def load(paths) -> torch.Tensor:
    """uint8 (N, 48, 48) of ``paths``, in order."""
    return torch.from_numpy(np.stack([read(p) for p in paths]))
