"""runner.py export / predict: exported networks equal the trained population's best-epoch networks.

One real run (experiment 08 shrunk: 2 learning rates x 2 head widths = 4 variants in 2 populations,
1 eager epoch on a tiny FER2013-format CSV of 256/64/64 images) is exported in every format; each file's logits must equal
``model.apply`` on the checkpoint's best-epoch weights, the ensemble must equal a by-hand softmax
average, and predict must read PNG/JPEG files of any size and mode. User mistakes exit 2 with one line.
"""
import csv
import importlib.util
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fer_func.config import ModelConfig
from fer_func.models import build_from
from fer_func.population.population import MEAN, STD
from fer_func import cli
from fer_func.study import checkpoint, resolved
from fer_func.study.experiments import variant_id
from fer_func.use import load_model

# ONNX is an optional extra (pip install -e '.[onnx]'): its cases skip, with the reason, where it is missing.
ONNX = "onnx" if all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime")) else \
    pytest.param("onnx", marks=pytest.mark.skip(reason="onnx, onnxscript or onnxruntime not installed "
                                                      "(pip install -e '.[onnx]')"))
FORMATS = ["state_dict", "pt2", "safetensors", "torchscript", ONNX]
SUFFIX = {"state_dict": ".pt", "pt2": ".pt2", "safetensors": ".safetensors", "torchscript": ".ts", "onnx": ".onnx"}
SMALL = ["--experiment", "08", "--set", "model.knobs.channels=[4,8]", "--set", "grid.optimizer.lr=[0.01,0.001]",
         "--set", 'grid.schedule.name=["constant"]', "--set", "grid.model.knobs.fc=[[16],[8]]",
         "--epochs", "1", "--no-compile", "--device", "cpu", "--wandb", "disabled"]


def tiny_fer2013(path, sizes=(("Training", 256), ("PublicTest", 64), ("PrivateTest", 64))):
    # the real emotion,pixels,Usage layout; small val/test splits keep the run's evaluations cheap
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"] + [f"{rng.integers(0, 7)},{' '.join(map(str, rng.integers(0, 256, 2304)))},{usage}"
                                        for usage, n in sizes for _ in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    data = tiny_fer2013(out / "fer2013.csv")
    assert cli.main([*SMALL, "--data", str(data), "--out", str(out)]) == 0
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def entries(run_dir):
    """results.json's variants by id (they are listed population by population, in row order)."""
    return {v["id"]: v for v in json.loads((run_dir / "results.json").read_text())["variants"]}


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    """``exported(variant, fmt) -> path``, each written once for the module (an ONNX export takes seconds)."""
    out, done = tmp_path_factory.mktemp("exports"), {}

    def get(variant, fmt):
        if (variant, fmt) not in done:
            path = out / f"{len(done)}{SUFFIX[fmt]}"
            assert cli.main(["export", str(run_dir), "--variant", variant, "--format", fmt, "--out", str(path)]) == 0
            done[variant, fmt] = path
        return done[variant, fmt]
    return get


@pytest.fixture(scope="module")
def faces():
    # (5, 48, 48) uint8, already in FER2013 form, so predict's preprocessing must leave them unchanged.
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8))


def best_of(entries):
    """summary.md's best variant: highest best-epoch val acc among the non-diverged, the first on a tie."""
    return max((e for e in entries.values() if not e["diverged"]), key=lambda e: e["final"]["val_acc"])


def config_of(run_dir, vid):
    (v,) = [v for v in resolved.load(run_dir) if variant_id(v) == vid]
    return v


def meta_of(path):
    return json.loads((path.parent / f"{path.name}.json").read_text())


def as_input(x_uint8):
    return x_uint8[:, None].float() / 255  # the exported input format: (N, 1, 48, 48) in [0, 1]


def population_logits(run_dir, entries, vid, x_uint8):
    """What training computed for a variant: ``model.apply`` with its best-epoch row of the population checkpoint."""
    g = entries[vid]["population"]
    row = [e["id"] for e in entries.values() if e["population"] == g].index(vid)
    best = checkpoint.load(run_dir / "checkpoints" / f"population-{g}.pt")["best"]
    v = config_of(run_dir, vid)
    params = {k: t[row] for k, t in best["params"].items()}
    state = {k: t[row] for k, t in best["model_state"].items()}
    logits, _ = build_from(v.model).apply(params, state, (as_input(x_uint8) - MEAN) / STD, train=False)
    return logits


def run_file(path, fmt, x):
    """The exported file's output, through the format's own runtime (not through fer_func)."""
    if fmt == "state_dict":  # the architecture in the file alone rebuilds the reference module
        payload = torch.load(path, weights_only=True)
        ref = build_from(ModelConfig(**payload["model"])).reference().eval()
        ref.load_state_dict(payload["state_dict"])
        return ref((x - MEAN) / STD)
    if fmt == "safetensors":  # the header's model entry alone rebuilds the reference module
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata()
        ref = build_from(ModelConfig(**json.loads(header["model"]))).reference().eval()
        ref.load_state_dict(load_file(str(path)))
        norm = json.loads(header["fer_func"])["input"]
        return ref((x - norm["mean"]) / norm["std"])
    if fmt == "pt2":
        return torch.export.load(str(path)).module()(x)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path))(x)
    import onnxruntime
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_best_variant_exports_its_best_epoch_logits(run_dir, entries, exported, faces, fmt):
    path = exported("best", fmt)
    meta = meta_of(path)
    best = best_of(entries)
    assert meta["source"]["variants"] == [best["id"]] and meta["val_acc"] == best["final"]["val_acc"]
    assert meta["classes"][0] == "Angry" and meta["members"][0]["config"]["model"]["name"] == "regularized_cnn"
    want = population_logits(run_dir, entries, best["id"], faces)
    with torch.no_grad():
        torch.testing.assert_close(run_file(path, fmt, as_input(faces)), want)
        torch.testing.assert_close(load_model(path).logits(as_input(faces)), want)
        if fmt == "pt2":  # one program for any batch: its batch dimension is symbolic
            torch.testing.assert_close(run_file(path, fmt, as_input(faces[:1])), want[:1])


def test_a_variant_by_id_from_the_second_population(run_dir, entries, exported, faces):
    vid = [e["id"] for e in entries.values() if e["population"] == 1][1]  # row 1 of population 1
    path = exported(vid, "state_dict")
    with torch.no_grad():
        torch.testing.assert_close(run_file(path, "state_dict", as_input(faces)),
                                   population_logits(run_dir, entries, vid, faces))


@pytest.mark.parametrize("fmt", ["state_dict", "pt2", "safetensors", ONNX])
def test_ensemble_is_the_softmax_average_of_the_best_variants_architecture(run_dir, entries, exported, faces, fmt):
    path = exported("ensemble", fmt)
    meta = meta_of(path)
    best = best_of(entries)
    same = [vid for vid, e in entries.items() if e["population"] == best["population"]]  # fc differs between pops
    assert meta["kind"] == "ensemble" and meta["source"]["variants"] == same
    assert sorted(x["id"] for x in meta["left_out"]) == sorted(set(entries) - set(same))
    by_hand = torch.stack([population_logits(run_dir, entries, vid, faces).softmax(-1) for vid in same]).mean(0)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path).logits(as_input(faces)).softmax(-1), by_hand)
    if fmt == "state_dict":  # loads into a ModuleList of the reference modules
        payload = torch.load(path, weights_only=True)
        nets = torch.nn.ModuleList([build_from(config_of(run_dir, best["id"]).model).reference() for _ in same])
        nets.load_state_dict(payload["state_dict"])


def write_images(folder, faces):
    """The same kinds of file a user has: colour and grey, PNG and JPEG, odd sizes, alpha."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(faces[0].numpy()).save(folder / "a_fer.png")  # exactly FER2013 form
    Image.fromarray(rng.integers(0, 256, (37, 61, 3), dtype=np.uint8)).save(folder / "b_colour.png")
    Image.fromarray(rng.integers(0, 256, (100, 81), dtype=np.uint8)).save(folder / "c_grey.jpg")
    Image.fromarray(rng.integers(0, 256, (640, 480, 3), dtype=np.uint8)).save(folder / "d_colour.jpeg", quality=90)
    Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)).save(folder / "e_alpha.png")
    (folder / "notes.txt").write_text("not an image: a folder's other files are skipped")
    return sorted(p for p in folder.iterdir() if p.suffix != ".txt")


@pytest.mark.parametrize("fmt", FORMATS)
def test_predict_prints_one_line_per_image_with_probabilities(run_dir, entries, exported, faces, fmt, tmp_path,
                                                              capsys):
    files = write_images(tmp_path / "imgs", faces)
    table = tmp_path / "out" / "p.csv"
    assert cli.main(["predict", str(exported("best", fmt)), str(tmp_path / "imgs"), "--csv", str(table),
                     "--no-detect"]) == 0  # whole images; tests/test_faces.py checks detection
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [str(f) for f in files]
    for line in lines:
        _, top, *pairs = line.split()
        probs = {k: float(x) for k, x in (p.split("=") for p in pairs)}
        assert list(probs) == ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
        assert sum(probs.values()) == pytest.approx(1, abs=1e-3) and top == max(probs, key=probs.get)
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == len(files)
    first = torch.tensor([float(rows[0][c]) for c in probs], dtype=torch.float64)
    # a 48x48 grey PNG goes through untouched: predict equals the population's own network on it
    (vid,) = meta_of(exported("best", fmt))["source"]["variants"]
    want = population_logits(run_dir, entries, vid, faces[:1]).double().softmax(-1)[0]
    torch.testing.assert_close(first, want, atol=1e-6, rtol=1e-5)


def test_user_mistakes_exit_2_with_one_line_naming_the_file(run_dir, exported, tmp_path, capsys):
    model = exported("best", "state_dict")
    good = tmp_path / "ok.png"
    Image.fromarray(np.zeros((48, 48), np.uint8)).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    cases = [
        (["predict", str(model), str(tmp_path / "missing.jpg")], "missing.jpg"),
        (["predict", str(model), str(good), str(bad)], "broken.png"),
        (["predict", str(tmp_path / "nope.pt"), str(good)], "nope.pt"),
        (["predict", str(model) + ".json", str(good)], "pt.json"),                       # wrong kind of file
        (["predict", str(run_dir / "checkpoints" / "population-0.pt"), str(good)], "population-0.pt"),  # a checkpoint
        (["predict", str(run_dir), str(good)], run_dir.name),                           # a run directory
        (["predict", str(model), str(tmp_path / "*.gif")], "*.gif"),
        (["export", str(run_dir), "--variant", "no-such-id", "--out", str(tmp_path / "m.pt")], "no-such-id"),
        (["export", str(tmp_path / "no_run"), "--out", str(tmp_path / "m.pt")], "no_run"),
    ]
    for argv, named in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and named in err, (argv, err)


@pytest.fixture(scope="module", params=["tpe", "pbt"])
def search_dir(tmp_path_factory, request):
    """A finished search of test_search.py's tiny MLP space: Optuna (3 one-epoch trials in 2 slots) or PBT
    (2 members, 2 epochs)."""
    from test_search import EXPERIMENT
    out = tmp_path_factory.mktemp("search")
    (out / "experiments.toml").write_text(EXPERIMENT)
    data = tiny_fer2013(out / "fer2013.csv", (("Training", 128), ("PublicTest", 48), ("PrivateTest", 48)))
    budget = ["--trials", "3", "--epochs", "1"] if request.param == "tpe" else ["--epochs", "2"]
    assert cli.main(["--search", "tiny", "--experiments", str(out / "experiments.toml"), "--method", request.param,
                     "--k", "2", *budget, "--profile", "full", "--no-compile", "--wandb", "disabled",
                     "--data", str(data), "--out", str(out / "runs")]) == 0
    (run,) = (out / "runs").iterdir()
    return run


@pytest.mark.parametrize("fmt", ["pt2", "safetensors"])
def test_a_search_exports_its_best_trials_best_epoch_weights(search_dir, faces, tmp_path, fmt):
    path = tmp_path / f"best{SUFFIX[fmt]}"
    assert cli.main(["export", str(search_dir), "--out", str(path)]) == 0
    best = json.loads((search_dir / "results.json").read_text())["best"]
    meta = meta_of(path)
    assert meta["source"]["variants"] == [f"trial-{best['trial']}"] and meta["val_acc"] == best["val_acc"]
    assert meta["test_acc"] == best["test_acc"] and meta["model"]["name"] == "mlp"
    ckpt = checkpoint.load(search_dir / "checkpoints" / "search.pt")
    if "champion" in ckpt["driver"]:  # Optuna: the best finished trial's weights, kept by the driver
        champion = ckpt["driver"]["champion"]
        assert champion["number"] == best["trial"]
        params, state = champion["params"], champion["model_state"]
    else:  # PBT: the best member's row of the population's best state
        pop_best = ckpt["population"]["best"]
        params, state = ({k: t[best["trial"]] for k, t in tree.items()}
                         for tree in (pop_best["params"], pop_best["model_state"]))
    from fer_func.search.run import Setup, _resolve
    from fer_func.study.options import RunOptions
    variant = Setup(_resolve(RunOptions(resume=search_dir, device="cpu"))).variant(best["params"])
    want, _ = build_from(variant.model).apply(params, state, (as_input(faces) - MEAN) / STD, train=False)
    with torch.no_grad():
        torch.testing.assert_close(run_file(path, fmt, as_input(faces)), want)
        torch.testing.assert_close(load_model(path).logits(as_input(faces)), want)


def test_a_search_has_only_its_best_trial_to_export(search_dir, tmp_path, capsys):
    assert cli.main(["export", str(search_dir), "--variant", "ensemble", "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--variant best" in err and "\n" not in err
