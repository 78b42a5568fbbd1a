"""``predict --annotate DIR`` and the demo page: each photo again, in colour, with its faces' boxes and labels.

A reader checks the detector and the model at a glance: a box on something that is not a face, or
a face without a box, shows where the cascade (faces.py) failed rather than the network.
"""
from __future__ import annotations

from pathlib import Path

COLOUR = (255, 64, 64)


def _font(height: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(12, height // 40))  # Pillow >= 10.1 scales its built-in font
    except TypeError:
        return ImageFont.load_default()


def annotated(result: dict, numbered: bool = False):
    """``result["image"]`` as an RGB PIL image, upright, with every face's box and label drawn on it.

    ``numbered``: each label starts with the face's number (1, 2, ... as listed), which the demo page's
    charts carry too."""
    from PIL import Image, ImageDraw, ImageOps

    with Image.open(result["image"]) as img:
        img = ImageOps.exif_transpose(img).convert("RGB")  # the boxes are in the upright image's pixels
    pen, font = ImageDraw.Draw(img), _font(img.height)
    width = max(2, img.height // 200)
    for i, face in enumerate(result["faces"], 1):
        x, y, w, h = face["box"]
        pen.rectangle([x, y, x + w - 1, y + h - 1], outline=COLOUR, width=width)
        text = (f"{i}: " if numbered else "") + f"{face['label']} {face['probs'][face['label']]:.2f}"
        left, top, right, bottom = pen.textbbox((x, y), text, font=font)
        ty = y - (bottom - top) - 2 * width if y - (bottom - top) - 2 * width >= 0 else y + h + width
        pen.rectangle([x, ty, x + (right - left) + 2 * width, ty + (bottom - top) + 2 * width], fill=COLOUR)
        pen.text((x + width, ty + width - (top - y)), text, fill=(255, 255, 255), font=font)
    return img


def draw(result: dict, out_dir: Path, taken: set) -> Path:
    """Write ``result["image"]`` with its faces drawn into ``out_dir``; returns the written path.

    The file keeps its name (PNG if Pillow cannot write its format); two photos of the same name from
    different folders get ``-2``, ``-3``, ... so none is overwritten."""
    img = annotated(result)
    src = Path(result["image"])
    suffix = src.suffix.lower() if src.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff") else ".png"
    out, n = out_dir / f"{src.stem}{suffix}", 1
    while out in taken:
        n += 1
        out = out_dir / f"{src.stem}-{n}{suffix}"
    taken.add(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out
