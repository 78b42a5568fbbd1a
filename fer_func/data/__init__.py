"""FER2013 data: the real CSV loader, the synthetic default, and batched on-device augmentation.

``load(source)`` is the one entry point the engine and CLI use; it returns :class:`FERData`
(uint8 images and int64 labels for ``train``/``val``/``test``) from either source.
"""
from fer_func.data.augment import augment, augment_each, class_weights, cutmix, mixup
from fer_func.data.dataset import CLASS_NAMES, SPLITS, DataError, FERData
from fer_func.data.fer2013 import load_csv
from fer_func.data import synthetic
from fer_func.data.synthetic import generate


def load(source="synthetic", *, seed: int = 0, skip_bad_rows: bool = False, cache_dir=None) -> FERData:
    """``"synthetic"`` renders the default dataset from ``seed``; anything else is a path to a FER2013 CSV
    (``.csv``/``.csv.gz``, or a directory holding one). ``seed`` also fixes the train/val/test split of a
    challenge ``train.csv``; ``cache_dir`` (default ``~/.cache/fer_func``, ``False`` = off) holds decoded
    files (both sources: a second load takes well under a second)."""
    if str(source) == "synthetic":
        return synthetic.load(seed=seed, cache_dir=cache_dir)
    return load_csv(source, seed=seed, skip_bad_rows=skip_bad_rows, cache_dir=cache_dir)


__all__ = ["load", "generate", "load_csv", "FERData", "DataError", "CLASS_NAMES", "SPLITS",
           "augment", "augment_each", "mixup", "cutmix", "class_weights"]
