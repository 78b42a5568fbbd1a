"""Write a run's network (or ensemble) as a state_dict, pt2, safetensors, TorchScript or ONNX file, plus FILE.json.

pt2 (torch.export), TorchScript and ONNX hold the same :class:`~fer_func.use.network.Classifier`:
(N, 1, 48, 48) float images in [0, 1] in, (N, 7) logits out, normalisation inside. state_dict and
safetensors hold the weights of the reference modules; the metadata says how to rebuild and normalise
(``model``, ``input.mean``/``input.std``). Every file also carries the metadata (the ``"fer_func"``
entry of the state_dict payload or of the safetensors header, the extra file ``fer_func.json`` of pt2
and TorchScript, ONNX's ``metadata_props``), so ``predict`` can tell an export from any other file;
FILE.json repeats it for people and other tools.

safetensors file: the same tensors as the state_dict payload's ``state_dict``; its header metadata
holds ``fer_func`` (the metadata) and ``model`` as JSON text, and ``members`` (K) as a decimal string.

state_dict payload (``torch.load(path, weights_only=True)``)::

    {"fer_func": metadata, "model": {"name", "knobs"}, "members": K,
     "state_dict": model.reference().state_dict() keys        (K = 1)
                   "<k>." + those keys, k = 0..K-1             (an ensemble: nn.ModuleList of references)}
"""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import json
import time
import warnings
from pathlib import Path

import torch

from fer_func.models import build_from
from fer_func.models.base import INPUT_SHAPE
from fer_func.population.step import MEAN, STD
from fer_func.study.checkpoint import atomic_write
from fer_func.study.report import CLASSES
from fer_func.use import images, network, source
from fer_func.use.errors import UseError

FORMATS = ("state_dict", "pt2", "safetensors", "torchscript", "onnx")
TAG = "fer_func.use export v1"  # in every file's metadata: what predict checks before trusting a file
_SUFFIX_FORMAT = {".onnx": "onnx", ".ts": "torchscript", ".torchscript": "torchscript", ".jit": "torchscript",
                  ".pt2": "pt2", ".safetensors": "safetensors"}


def format_for(out: Path, fmt: str | None) -> str:
    """``fmt``, or the one ``out``'s suffix implies (.pt2, .safetensors, .onnx, .ts/.torchscript/.jit), else state_dict."""
    return fmt or _SUFFIX_FORMAT.get(Path(out).suffix.lower(), "state_dict")


def sidecar(path) -> Path:
    """FILE.json: the suffix is kept (model.pt.json, model.onnx.json) so two formats never share one."""
    return Path(f"{path}.json")


def metadata(run_dir, members: list, left_out: list, fmt: str) -> dict:
    one = len(members) == 1
    return {
        "tag": TAG, "format": fmt, "kind": "single" if one else "ensemble", "classes": list(CLASSES),
        "input": {"shape": ["N", *INPUT_SHAPE], "dtype": "float32", "range": [0.0, 1.0],
                  "image": images.DESCRIPTION, "normalisation": f"(x - {MEAN}) / {STD}, inside the network",
                  "mean": MEAN, "std": STD},
        "output": "(N, 7) logits; softmax gives the class probabilities" if one else
                  "(N, 7) log of the members' mean softmax; softmax gives the averaged class probabilities",
        "model": {"name": members[0].variant.model.name, "knobs": build_from(members[0].variant.model).knobs},
        "source": {"run_dir": str(Path(run_dir).resolve()), "variants": [m.id for m in members]},
        # an ensemble's own accuracy is not measured here; its members' are
        "val_acc": members[0].val_acc if one else None, "test_acc": members[0].test_acc if one else None,
        "members": [{"id": m.id, "population": m.population, "index": m.index, "best_epoch": m.best_epoch,
                     "val_acc": m.val_acc, "test_acc": m.test_acc, "config": dataclasses.asdict(m.variant)}
                    for m in members],
        "left_out": left_out, "exported": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": str(torch.__version__),  # TorchVersion would not load with weights_only
    }


def export(run_dir, out, which: str = "best", fmt: str | None = None) -> tuple[Path, Path, dict]:
    """Write ``out`` and ``out.json``; returns both paths and the metadata."""
    out, fmt = Path(out), format_for(out, fmt)
    if fmt not in FORMATS:
        raise UseError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if out.is_dir():
        raise UseError(f"--out {str(out)!r} is a directory; give a file name, e.g. {out / 'model.pt'}")
    members, left_out = source.select(run_dir, which)
    meta = metadata(run_dir, members, left_out, fmt)
    write(out, fmt, members[0].variant.model, [m.state_dict for m in members], meta)
    return out, sidecar(out), meta


def write(out, fmt: str, model, state_dicts: list[dict], meta: dict):
    """``out`` in ``fmt`` and ``out.json``: the nets (one reference ``state_dict`` each) of architecture
    ``model`` (a ModelConfig), ``meta`` inside the file and beside it."""
    state_dicts = [network.as_float32(sd) for sd in state_dicts]
    if fmt in ("state_dict", "safetensors"):
        sd = state_dicts[0] if len(state_dicts) == 1 else {f"{k}.{n}": t for k, s in enumerate(state_dicts)
                                                            for n, t in s.items()}
        arch = {"name": model.name, "knobs": dict(model.knobs)}
        if fmt == "state_dict":
            payload = {"fer_func": meta, "model": arch, "members": len(state_dicts), "state_dict": sd}
            _write(out, writer=lambda f: torch.save(payload, f))
        else:
            _write(out, _safetensors(sd, arch, len(state_dicts), meta))
    else:
        classifier = network.build(model, state_dicts)
        writer = {"torchscript": _torchscript, "onnx": _onnx, "pt2": _pt2}[fmt]
        _write(out, writer(classifier, meta))
    _write(sidecar(out), (json.dumps(meta, indent=1) + "\n").encode())


def _write(path, data=None, writer=None):
    atomic_write(path, data, writer=writer)
    # atomic_write's temporary file is private (0600); an exported model is meant to be shared, so it
    # gets the permissions a plain open() would give it.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _torchscript(classifier, meta: dict) -> bytes:
    with warnings.catch_warnings():
        # torch 2.14 marks TorchScript deprecated in favour of torch.export; it still is what the C++
        # and mobile runtimes load, and every torch this project supports reads it.
        warnings.filterwarnings("ignore", category=FutureWarning)
        traced = torch.jit.trace(classifier, network.example_input())  # no data-dependent branches: trace is exact
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={"fer_func.json": json.dumps(meta)})
    return buf.getvalue()


def _onnx(classifier, meta: dict) -> bytes:
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]  # torch's exporter needs both
    if missing:
        raise UseError(f"--format onnx needs the optional packages onnx and onnxscript ({', '.join(missing)} missing); "
                       f"install them with: pip install -e '.[onnx]'")
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(classifier, (network.example_input(),), input_names=["images"],
                                output_names=["logits"], dynamic_shapes=({0: batch},), verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = "fer_func", json.dumps(meta)
    return proto.SerializeToString()


def _pt2(classifier, meta: dict) -> bytes:
    # torch.export: the format torch keeps supporting (TorchScript's successor); the batch dimension is
    # symbolic, so one file serves any N. The example batch is 2: torch specialises sizes 0 and 1.
    program = torch.export.export(classifier, (network.example_input(2),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 20)},))
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={"fer_func.json": json.dumps(meta)})
    return buf.getvalue()


def _safetensors(sd: dict, arch: dict, members: int, meta: dict) -> bytes:
    from safetensors.torch import save

    # safetensors metadata is str -> str: each entry is JSON text. The tensors are cloned because views
    # into one population's stacked weights would share storage, which safetensors refuses.
    return save({n: t.contiguous().clone() for n, t in sd.items()},
                metadata={"fer_func": json.dumps(meta), "model": json.dumps(arch), "members": str(members)})
