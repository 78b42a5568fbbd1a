"""Load any file ``runner.py export`` writes and turn images (or the faces in them) into class probabilities.

The format is read from the file itself, not its name: a zip archive with an ``archive_format`` entry
is a torch.export program (pt2), one with a ``code/`` folder is TorchScript,
another zip is a ``torch.save`` payload (our state_dict export, or a training checkpoint, which is
refused with the export command to run); a file that starts with an 8-byte header length and ``{`` is
safetensors; anything else is tried as ONNX. Each
format's own copy of the export metadata is checked, so a foreign file fails with one clear line
instead of wrong predictions.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fer_func.config import ModelConfig
from fer_func.use import images, network
from fer_func.use.errors import UseError
from fer_func.use.export import TAG

CHUNK = 256  # images per forward pass: bounds memory for a folder of thousands


@dataclass(frozen=True)
class LoadedModel:
    """``logits(x)``: float (N, 1, 48, 48) in [0, 1] -> (N, 7); ``meta``: the export metadata."""
    path: Path
    format: str
    meta: dict
    logits: Callable[[torch.Tensor], torch.Tensor]


def _not_ours(path, what: str) -> UseError:
    return UseError(f"{path}: {what}, not a model written by `python runner.py export`; export one with "
                    f"`python runner.py export RUN_DIR --out model.pt` and pass that file")


def _checked(path, meta) -> dict:
    if not isinstance(meta, dict) or meta.get("tag") != TAG:
        raise _not_ours(path, "its metadata is missing or from another version")
    return meta


def _state_dict(path: Path) -> LoadedModel:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickled code (refused by weights_only), ...: all unreadable here
        raise _not_ours(path, f"a torch file that cannot be read safely ({type(e).__name__})") from None
    if isinstance(payload, dict) and {"carry", "best"} <= payload.keys():
        raise UseError(f"{path}: a training checkpoint (K stacked variants), not an exported network; export one "
                       f"with `python runner.py export RUN_DIR --out model.pt` (RUN_DIR is the folder above checkpoints/)")
    if not isinstance(payload, dict) or "fer_func" not in payload:
        raise _not_ours(path, "a torch file without fer_func export metadata")
    meta = _checked(path, payload["fer_func"])
    sd, k = payload["state_dict"], payload["members"]
    per_net = [sd] if k == 1 else [{n[len(f"{i}."):]: t for n, t in sd.items() if n.startswith(f"{i}.")}
                                   for i in range(k)]
    classifier = network.build(ModelConfig(**payload["model"]), per_net)
    return LoadedModel(path, "state_dict", meta, classifier)


def _torchscript(path: Path) -> LoadedModel:
    extra = {"fer_func.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # TorchScript's deprecation notice (export.py)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    meta = _checked(path, json.loads(extra["fer_func.json"] or "null"))
    return LoadedModel(path, "torchscript", meta, module.eval())


def _pt2(path: Path) -> LoadedModel:
    extra = {"fer_func.json": ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as e:  # a pt2 from another torch version, or a damaged archive
        raise _not_ours(path, f"a torch.export file this torch ({torch.__version__}) cannot load "
                              f"({type(e).__name__})") from None
    meta = _checked(path, json.loads(extra["fer_func.json"] or "null"))
    return LoadedModel(path, "pt2", meta, program.module())


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _safetensors(path: Path) -> LoadedModel:
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        sd = load_file(str(path))
    except ImportError:
        raise UseError(f"{path}: a safetensors file needs the package safetensors: pip install -e .") from None
    except Exception as e:
        raise _not_ours(path, f"an unreadable safetensors file ({type(e).__name__})") from None
    meta = _checked(path, json.loads(header.get("fer_func", "null")))
    k = int(header["members"])
    per_net = [sd] if k == 1 else [{n[len(f"{i}."):]: t for n, t in sd.items() if n.startswith(f"{i}.")}
                                   for i in range(k)]
    classifier = network.build(ModelConfig(**json.loads(header["model"])), per_net)
    return LoadedModel(path, "safetensors", meta, classifier)


def _onnx(path: Path) -> LoadedModel:
    try:
        import onnxruntime
    except ImportError:
        if path.suffix.lower() == ".onnx":
            raise UseError(f"{path}: an ONNX model needs the optional package onnxruntime; install it with: "
                           f"pip install -e '.[onnx]' (or export the run again with --format state_dict)") from None
        raise _not_ours(path, "neither a torch file nor (without onnxruntime installed) a checkable ONNX file") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own exception types for any non-ONNX bytes
        raise _not_ours(path, "neither a torch file nor an ONNX model") from None
    meta = _checked(path, json.loads(session.get_modelmeta().custom_metadata_map.get("fer_func", "null")))
    name = session.get_inputs()[0].name

    def logits(x):
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    return LoadedModel(path, "onnx", meta, logits)


def load_model(path) -> LoadedModel:
    path = Path(path)
    if path.is_dir():
        hint = (f"it is a run directory; export a network from it first: python runner.py export {path} --out model.pt"
                if (path / "results.json").is_file() else "it is a folder; pass the file `runner.py export` wrote")
        raise UseError(f"model {str(path)!r}: {hint}")
    if not path.is_file():
        raise UseError(f"model file {str(path)!r} not found; export one with `python runner.py export RUN_DIR --out model.pt`")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/archive_format") for n in names):  # torch.export's archive marks itself
            return _pt2(path)
        return _torchscript(path) if any("/code/" in n for n in names) else _state_dict(path)
    if _is_safetensors(path):
        return _safetensors(path)
    return _onnx(path)


@torch.no_grad()
def probabilities(model: LoadedModel, x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 48, 48) images -> (N, 7) float64 probabilities (rows sum to 1)."""
    x = x[:, None].to(torch.float32) / 255.0  # (N, 1, 48, 48) in [0, 1], the exported input format
    logits = torch.cat([model.logits(chunk) for chunk in x.split(CHUNK)])
    if logits.shape[1:] != (len(model.meta["classes"]),):
        raise UseError(f"{model.path}: the network returns shape {tuple(logits.shape)}, expected "
                       f"(N, {len(model.meta['classes'])}); export it again")
    return logits.double().softmax(-1)


def predict_files(model_path, image_args) -> tuple[LoadedModel, list[Path], torch.Tensor]:
    """Load the model and every image (files, folders, globs), then ``(model, paths, probabilities)``.

    Each whole image is one face (``--no-detect``); ``predict_faces`` finds the faces first."""
    model = load_model(model_path)
    paths = images.expand(image_args)
    return model, paths, probabilities(model, images.load(paths))


def predict_faces(model_path, image_args, detect: bool = True) -> tuple[LoadedModel, list[dict]]:
    """``(model, [{"image": path, "faces": [{"box": [x, y, w, h], "probs": {class: p}, "label": class}]}])``.

    ``detect``: each face the cascade finds (faces.py), none for a photo without one; else the whole
    image's centred square is the one face, exactly as ``predict_files`` reads it."""
    from fer_func.use import faces

    model = load_model(model_path)
    if detect:
        faces.cascade()  # a missing OpenCV is reported before any image is read
    return model, [faces_of(model, path, detect) for path in images.expand(image_args)]


def faces_of(model: LoadedModel, path, detect: bool = True) -> dict:
    """One image file's ``{"image": path, "faces": [...]}`` as ``predict_faces`` lists it, with a loaded model
    (the demo page keeps one for every upload)."""
    from fer_func.use import faces

    classes = model.meta["classes"]
    img = images.open_gray(path)
    boxes = faces.detect(img) if detect else [images.centre_box(img)]
    crops = [faces.crop(img, b) if detect else images.to_fer(img) for b in boxes]
    probs = probabilities(model, torch.from_numpy(np.stack(crops))).tolist() if crops else []
    return {"image": str(path), "faces": [
        {"box": box, "probs": dict(zip(classes, p)), "label": classes[max(range(len(p)), key=p.__getitem__)]}
        for box, p in zip(boxes, probs)]}
