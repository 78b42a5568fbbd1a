"""W&B tracking with the real wandb client in offline mode: one run directory per variant, read back.

Offline runs keep everything in ``run-<id>.wandb``, a LevelDB-style log of protobuf records (the
file ``wandb sync`` uploads). ``records`` below reads it, so the test checks what was logged, not
just that wandb did not crash.
"""
import json
import struct
import time
import sys

import pytest

from fer_func.config import ConfigError, OptimizerConfig, VariantConfig
from fer_func.study import report
from fer_func.study import tracking
from fer_func.study.tracking import Tracker


def records(path):
    """Protobuf records of a .wandb file: 7-byte file header, then 32 KiB blocks of CRC/len/type-framed chunks."""
    from wandb.proto import wandb_internal_pb2 as pb
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", data[:7]
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (n == 0 and kind == 0):  # block trailer padding
            pos += left
            continue
        chunks += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST chunk
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def read_run(run_dir, wait_s: float = 30.0):
    """The run's records, once wandb's service has written them all.

    wandb's service process can still be appending to the .wandb file for a moment after
    ``run.finish()`` returns, so a read can meet a half-written record (seen once in CI as
    "Wire format was corrupt"; the same file parsed whole a second later). Retry until it parses.
    """
    from google.protobuf.message import DecodeError
    deadline = time.monotonic() + wait_s
    while True:
        try:
            run = _read_run(run_dir)
            if run["summary"] or time.monotonic() > deadline:  # finish() writes the summary last
                return run
        except DecodeError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _read_run(run_dir):
    [path] = run_dir.glob("run-*.wandb")
    out = {"config": {}, "history": [], "summary": {}, "group": None, "name": None, "artifacts": []}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["group"], out["name"] = r.run.run_group, r.run.display_name
            out["id"], out["project"], out["entity"] = r.run.run_id, r.run.project, r.run.entity
            out["config"].update({u.key: json.loads(u.value_json) for u in r.run.config.update if u.key})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in r.summary.update})
        elif kind == "artifact":
            a = r.artifact
            out["artifacts"].append({"name": a.name, "type": a.type, "aliases": list(a.aliases),
                                     "metadata": json.loads(a.metadata or "{}"),
                                     "files": {c.path: c.local_path for c in a.manifest.contents}})
    return out


def results_for(variants):
    out = []
    for i, v in enumerate(variants):
        cm = [[0] * 7 for _ in range(7)]
        for k in range(7):
            cm[k][k], cm[k][(k + 1) % 7] = 3 + i, 1
        out.append({"id": f"v{i}", "hparams": v.hparams, "seed": v.seed, "diverged": i == 1, "param_count": 100 + i,
                    "epochs": [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.3 + 0.1 * e + i / 100,
                                "val_loss": 1.5 / e, "val_acc": 0.2 + 0.1 * e + i / 100, "lr": 0.1, "epoch_s": 2.0}
                               for e in (1, 2)],
                    "final": {"train_acc": 0.5, "val_acc": 0.4 + i / 100, "test_acc": 0.38, "best_epoch": 2, "gap": 0.1,
                              "per_class": report.per_class(cm), "confusion": cm}})
    return {"variants": out, "timing": {}}


def test_offline_runs_record_everything(tmp_path, monkeypatch):
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "home" / var))
    variants = [VariantConfig(experiment="lr", optimizer=OptimizerConfig(lr=lr), hparams={"optimizer.lr": lr})
                for lr in (0.1, 0.01)]
    results = results_for(variants)
    monkeypatch.setenv("WANDB_PROJECT", "from-env")  # no --wandb-project: the environment's project
    with Tracker("offline", tmp_path, group="lr-study") as tracker:
        tracker.start(variants, [100, 101])
        for e in range(2):
            tracker.log_epoch([v["epochs"][e] for v in results["variants"]])
        tracker.finish(results)

    run_dirs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 2
    runs = sorted((read_run(d) for d in run_dirs), key=lambda r: r["name"])
    assert [r["name"] for r in runs] == ["lr[lr=0.01]-s0", "lr[lr=0.1]-s0"]
    for run, i, lr in [(runs[1], 0, 0.1), (runs[0], 1, 0.01)]:
        assert run["group"] == "lr-study" and run["project"] == "from-env"
        assert run["id"] == tracking.run_id_for(tmp_path.name, run["name"])  # fixed: --resume continues it
        assert run["config"]["param_count"] == 100 + i and run["config"]["optimizer"]["lr"] == lr
        assert run["config"]["hp/optimizer.lr"] == lr and run["config"]["variant_id"] == run["name"]
        epochs = [h for h in run["history"] if "val_acc" in h]
        assert [(h["epoch"], h["val_acc"], h["train_loss"]) for h in epochs] == [
            (1, pytest.approx(0.3 + i / 100, abs=1e-15), 1.0), (2, pytest.approx(0.4 + i / 100, abs=1e-15), 0.5)]
        # gap per epoch: train_acc - val_acc (0.1 in results_for)
        assert [h["gap"] for h in epochs] == [pytest.approx(0.1, abs=1e-12)] * 2
        s = run["summary"]
        # define_metric keeps the best and last values; nothing is written by hand
        assert s["val_acc"]["max"] == pytest.approx(0.4 + i / 100, abs=1e-15) and s["diverged"] is (i == 1)
        assert s["val_loss"]["min"] == 0.75 and s["train_loss"]["last"] == 0.5 and "best_val_acc" not in s
        assert (s["final_gap"], s["test_acc"], s["best_of_study"]) == (0.1, 0.38, i == 0)
        assert s["per_class/_type"] == "table-file" and s["per_class/nrows"] == 7 and s["confusion_matrix_table/nrows"] > 0
        for key in ("learning_curves_image", "confusion_matrix_image"):
            assert s[f"{key}/_type"] == "image-file" and s[f"{key}/width"] > 100, key
    # the confusion-matrix table holds the counts we passed (run 0: 3 right, 1 wrong per class)
    [cm_file] = [d for d in run_dirs if read_run(d)["name"] == "lr[lr=0.1]-s0"][0].glob("files/media/table/confusion*.json")
    table = json.loads(cm_file.read_text())
    counts = {(a, p): n for a, p, n in table["data"]}
    assert counts[("Angry", "Angry")] == 3 and counts[("Angry", "Disgust")] == 1 and counts[("Angry", "Fear")] == 0


def test_disabled_works_without_wandb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    t = Tracker("disabled", tmp_path)
    t.start([VariantConfig()], [1])
    t.log_epoch([{"epoch": 1}])
    t.finish(results_for([VariantConfig()]))
    assert not t.enabled and not (tmp_path / "wandb").exists()
    with pytest.raises(ConfigError, match="--wandb offline: the wandb package is not installed; .* --wandb disabled"):
        Tracker("offline", tmp_path)
    with pytest.raises(ConfigError, match="--wandb 'local': choose one of offline, online, disabled"):
        Tracker("local", tmp_path)


def test_a_study_logs_each_variants_model_and_figures_and_resume_continues_its_runs(tmp_path, monkeypatch):
    """End to end through the CLI: a 2-variant study with --wandb-project, then --resume of its directory."""
    import torch
    from fer_func import cli
    from fer_func.config import ModelConfig
    from fer_func.models import build_from
    from fer_func.use import predict
    from test_all import tiny_fer2013

    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "home" / var))
    monkeypatch.setenv("FER_FUNC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_PROJECT", "not-this-one")  # the flag wins over the environment
    csv = tiny_fer2013(tmp_path / "fer2013.csv", (("Training", 64), ("PublicTest", 32), ("PrivateTest", 32)))
    out = tmp_path / "runs"
    assert cli.main(["--experiment", "08", "--out", str(out), "--data", str(csv), "--profile", "full",
                     "--set", "model.knobs.channels=[4,8]", "--set", "model.knobs.fc=[16]", "--no-compile",
                     "--epochs", "2", "--set", "grid.optimizer.lr=[0.01,0.001]", "--set", 'grid.schedule.name=["constant"]',
                     "--wandb", "offline", "--wandb-project", "faces", "--wandb-entity", "lab"]) == 0
    (run_dir,) = list(out.iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    first = {d.name for d in (run_dir / "wandb").glob("offline-run-*")}
    runs = {r["name"]: r for r in (read_run(run_dir / "wandb" / d) for d in first)}
    assert set(runs) == {v["id"] for v in results["variants"]}
    best = report.best_variant(results)
    for i, v in enumerate(results["variants"]):
        run = runs[v["id"]]
        assert (run["project"], run["entity"], run["id"]) == ("faces", "lab", tracking.run_id_for(run_dir.name, v["id"]))
        assert [h["epoch"] for h in run["history"] if "val_acc" in h] == [0, 1]
        # The best checkpoint as a "model" artifact whose metadata is the variant's configuration ...
        [art] = [a for a in run["artifacts"] if a["type"] == "model"]
        assert art["name"] == f"model-{run['id']}" and "best" in art["aliases"]
        assert ("best-of-study" in art["aliases"]) == (i == best)
        assert art["metadata"]["variant_id"] == v["id"] and art["metadata"]["hparams"] == v["hparams"]
        assert art["metadata"]["optimizer"]["lr"] == v["hparams"]["optimizer.lr"]
        assert art["metadata"]["val_acc"] == pytest.approx(v["final"]["val_acc"])
        # ... holding the file `fer-func export` writes: predict loads it as a user would after download().
        assert set(art["files"]) == {"model.pt", "model.pt.json"}
        model = predict.load_model(art["files"]["model.pt"])
        payload = torch.load(art["files"]["model.pt"], weights_only=True)  # docs/study.md's plain-torch recipe
        build_from(ModelConfig(**payload["model"])).reference().load_state_dict(payload["state_dict"])
        assert model.meta["source"]["variants"] == [v["id"]] and model.meta["model"]["name"] == results["populations"][0]["model"]
        # Figures as images: the run's own curves and confusion matrix, and the prediction grid.
        files = run_dir / "wandb" / next(d for d in first if runs[v["id"]]["id"] in d) / "files"
        s = run["summary"]
        for key in ("learning_curves_image", "confusion_matrix_image", "predictions"):
            assert s[f"{key}/_type"] == "image-file" and (files / s[f"{key}/path"]).is_file(), key
        assert ("study/learning_curves/path" in s) == (i == best)  # RUN_DIR/plots/*.png on the best run

    # --resume of the same directory continues the same W&B runs (same ids), logging no epoch twice.
    assert cli.main(["--resume", str(run_dir), "--no-compile"]) == 0
    again = {d.name for d in (run_dir / "wandb").glob("offline-run-*")} - first
    resumed = [read_run(run_dir / "wandb" / d) for d in again]
    assert sorted(r["id"] for r in resumed) == sorted(r["id"] for r in runs.values())
    assert all(r["project"] == "faces" and not [h for h in r["history"] if "val_acc" in h] for r in resumed)
    # and --wandb-project cannot move a resumed run elsewhere
    assert cli.main(["--resume", str(run_dir), "--wandb-project", "other"]) == 2
