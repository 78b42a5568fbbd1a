"""Faces in a photo: OpenCV's frontal-face Haar cascade finds them, each is cut out as FER2013 frames a face.

    photo (any size, grayscale PIL image) -> shrunk to at most DETECT_SIDE px (speed only)
        -> cv2.CascadeClassifier(haarcascade_frontalface_default.xml).detectMultiScale
        -> boxes [x, y, w, h] in the photo's own pixels, sorted left to right
        -> each box, grown by MARGIN, as a square crop -> images.to_fer -> uint8 (48, 48)

The cascade ships inside the opencv-python-headless wheel (``cv2.data.haarcascades``): nothing is
downloaded at run time. Its limits (see docs/use.md): it finds upright, frontal faces; it misses
faces turned more than about 30 degrees, tilted in the image plane, partly covered, or smaller than
MIN_FACE px; on busy backgrounds it can also fire on things that are not faces. On real FER2013 faces
upscaled to 140 px and pasted onto a noisy grey background it finds exactly one face, where it was
pasted, for 219 of the first 300 rows (73%); tests/test_faces.py picks its faces among the found ones.
"""
from __future__ import annotations

import numpy as np

from fer_func.use.errors import UseError

CASCADE = "haarcascade_frontalface_default.xml"
# The cascade's box on a FER2013 face upscaled to 140 px is about the whole image (median width 0.98 of
# it, offset < 1%, over the 219 faces above): FER2013 frames a face as this cascade does, so no margin.
MARGIN = 0.0
MIN_FACE = 32        # px in the image the cascade sees; smaller windows mostly find noise
DETECT_SIDE = 1280   # a 12 MP phone photo is shrunk first: the cascade's time grows with the pixel count
SCALE_FACTOR, MIN_NEIGHBORS = 1.1, 5  # OpenCV's documented defaults for face detection

_cascade = None


def cascade():
    """The loaded cascade (once per process); a missing OpenCV is a user's fix, not a traceback."""
    global _cascade
    if _cascade is None:
        try:
            import cv2
        except ImportError:
            raise UseError("face detection needs OpenCV: pip install -e '.[faces]' (opencv-python-headless); "
                           "or pass --no-detect for images already cropped to one face") from None
        _cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
        if _cascade.empty():
            raise UseError(f"OpenCV could not load {cv2.data.haarcascades + CASCADE}; reinstall opencv-python-headless")
    return _cascade


def detect(img) -> list[list[int]]:
    """Face boxes ``[x, y, w, h]`` (ints, the photo's pixels) of a grayscale PIL image, left to right."""
    scale = min(1.0, DETECT_SIDE / max(img.size))
    small = img if scale == 1.0 else img.resize((round(img.width * scale), round(img.height * scale)))
    found = cascade().detectMultiScale(np.asarray(small, dtype=np.uint8), scaleFactor=SCALE_FACTOR,
                                       minNeighbors=MIN_NEIGHBORS, minSize=(MIN_FACE, MIN_FACE))
    boxes = [[round(int(v) / scale) for v in box] for box in found]  # () when nothing is found
    return sorted(boxes, key=lambda b: (b[0], b[1]))


def crop(img, box) -> np.ndarray:
    """The face in ``box`` as a FER2013 image: uint8 (48, 48)."""
    from fer_func.use.images import to_fer

    x, y, w, h = box
    side = max(w, h) * (1 + 2 * MARGIN)
    cx, cy = x + w / 2, y + h / 2
    # Shift the square back inside the photo rather than pad it: FER2013 has no black borders.
    left = min(max(cx - side / 2, 0), max(img.width - side, 0))
    top = min(max(cy - side / 2, 0), max(img.height - side, 0))
    square = img.crop((round(left), round(top), round(left + side), round(top + side)))
    return to_fer(square)
