"""Using a trained model: export a network (or an ensemble) from a run directory, and predict on image files.

    run directory --(source.py; trial.py for a search)--> best-epoch weights --(network.py)--> Classifier
                  --(export.py)--> state_dict / pt2 / safetensors / TorchScript / ONNX file + FILE.json
    photos --(images.py: grayscale)--(faces.py: Haar cascade, crop)--> uint8 (F, 48, 48) per photo
           --(predict.py: any exported file)--> per face: box, probabilities, label (annotate.py draws them)
    pre-cropped faces (--no-detect) --(images.py)--> uint8 (N, 48, 48) --(predict.py)--> probabilities

The exported network takes (N, 1, 48, 48) float images in [0, 1] and normalises them itself, so
nothing outside it needs to know the training normalisation. See docs/use.md.
"""
import importlib

from fer_func.use.errors import UseError

# Loaded on first use, so `runner.py export --help` and usage errors answer without importing the engine.
_LAZY = {"Classifier": "fer_func.use.network", "load_model": "fer_func.use.predict",
         "predict_files": "fer_func.use.predict", "predict_faces": "fer_func.use.predict"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fer_func.use' has no attribute {name!r}")


__all__ = ["Classifier", "UseError", "load_model", "predict_faces", "predict_files"]
