"""W&B model artifacts: each variant's best network, as the file ``fer-func export`` writes, logged to its run.

The study's tracker (fer_func/study/tracking.py) opens and closes the runs; writing a model file is this
package's business (export.py), so the CLI hands :func:`log_models` to the run (``study.run.run(options,
model_artifacts=log_models)``) instead of the study importing the application layer above it.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from fer_func.study import plots
from fer_func.study.report import CLASSES, best_variant
from fer_func.study.tracking import SAMPLES_PER_CLASS
from fer_func.use import export, predict, source
from fer_func.use.errors import UseError


def log_models(tracker, results: dict, data=None) -> None:
    """Each variant's best-epoch network as a W&B ``model`` artifact, and (with ``data``) a grid of
    PrivateTest faces it labels. Needs the run directory's checkpoints and results.json (write the
    report first).

    The artifact ``model-<run id>`` holds ``model.pt``, the file ``fer-func export --format
    state_dict`` writes (fer_func/use/export.py), and ``model.pt.json``; its metadata is the
    variant's configuration. After ``artifact.download()``: ``fer-func predict DIR/model.pt
    face.jpg``, or ``torch.load(DIR/model.pt, weights_only=True)["state_dict"]`` into
    ``build_from(ModelConfig(**payload["model"])).reference()``. The grid's predictions are made by
    that very file, loaded back as a user would.
    """
    if not tracker.enabled:
        return

    wandb = tracker._wandb
    members = source.every(tracker.run_dir)
    best = best_variant(results)
    faces = sample_faces(data) if data is not None else None
    with tempfile.TemporaryDirectory(prefix="fer-func-wandb-") as tmp:
        for i, run in enumerate(tracker.runs):
            vid = run.config["variant_id"]
            member = members.get(vid)
            if isinstance(member, UseError) or member is None:
                print(f"note: W&B: no model artifact for {vid}: {member or 'not in config.toml'}", flush=True)
                continue
            out = Path(tmp) / run.id / "model.pt"
            out.parent.mkdir(parents=True)
            meta = export.metadata(tracker.run_dir, [member], [], "state_dict")
            export.write(out, "state_dict", member.variant.model, [member.state_dict], meta)
            artifact = wandb.Artifact(f"model-{run.id}", type="model", description=f"{vid}: best-epoch network",
                                      metadata={**dataclasses.asdict(member.variant), "variant_id": vid,
                                                "best_epoch": member.best_epoch, "val_acc": member.val_acc,
                                                "test_acc": member.test_acc})
            artifact.add_file(str(out), name="model.pt")
            artifact.add_file(str(export.sidecar(out)), name="model.pt.json")
            run.log_artifact(artifact, aliases=["best"] + (["best-of-study"] if i == best else []))
            if faces is not None:
                x, y = faces
                pred = predict.probabilities(predict.load_model(out), x).argmax(-1)
                grid = plots.predictions(out.parent / "predictions.png", x.numpy(), y.tolist(), pred.tolist(),
                                         CLASSES, cols=len(CLASSES), title=f"{vid}: PrivateTest, predicted (true)")
                run.log({"predictions": wandb.Image(str(grid), caption="predicted (true); green: right")})


def sample_faces(data):
    """SAMPLES_PER_CLASS PrivateTest faces of each class, class by class: uint8 (N, 48, 48) and labels (N,)."""
    import torch

    x, y = data.split("test")
    x, y = x.cpu(), y.cpu()
    per_class = [(y == c).nonzero().flatten()[:SAMPLES_PER_CLASS].tolist() for c in range(len(CLASSES))]
    # row r of the grid: the r-th face of each class
    picks = torch.tensor([ids[r] for r in range(SAMPLES_PER_CLASS) for ids in per_class if r < len(ids)],
                         dtype=torch.long)
    return x[picks], y[picks]
