"""Any number of compiled populations in one process (``--all``, a notebook building one after another).

Dynamo caches compiled code per code object, and every population's step is ``vmap(step)``: before
``fer_func.compile.own_code`` the ninth distinct population of a process hit the recompile limit,
a hard error under ``fullgraph=True`` (``--all`` died that way at the ResNet population). Here more
than twelve distinct populations (every family, several K, accumulation, augmentation, varying
dropout, mixed optimizers) each compile, take a step and evaluate in one process, and each one's
result equals the same population run eagerly, so none picked up another's compiled program.

The many-population test compiles through dynamo with the ``aot_eager`` backend: the same tracing,
guards, caches and recompile limit as inductor, without inductor's C++ code generation (tens of
seconds per population on 2 cores). One more population then compiles with inductor.
"""
import pytest
import torch

from fer_func import tree
from fer_func.config import AugmentConfig, ModelConfig, OptimizerConfig, VariantConfig
from fer_func.population import Population
from fer_func.compile import own_code

from conftest import random_data

AUG = AugmentConfig(enabled=True)
MODELS = {
    "mlp": ModelConfig("mlp", {"hidden": [16, 8]}),
    "simple_cnn": ModelConfig("simple_cnn", {"channels": [2, 4], "fc": [8]}),
    "large_cnn": ModelConfig("large_cnn", {"channels": [2, 2, 4, 4, 4], "fc": [8, 8]}),
    "regularized_cnn": ModelConfig("regularized_cnn", {"channels": [2, 2, 4, 4], "fc": [8]}),
    "resnet": ModelConfig("resnet", {"stem": 2, "stages": [2, 4, 4, 4], "blocks": 1}),
    "tiny_cnn": ModelConfig("tiny_cnn", {"channels": [2]}),
}


def cases():
    """(name, variants): 14 populations that differ in static structure, so each compiles anew."""
    base = VariantConfig(epochs=1, batch_size=16)
    out = [(f"{name}-K{k}", [base.replace(model=m, seed=i) for i in range(k)])
           for name, m in MODELS.items() for k in ((2, 3) if name in ("mlp", "tiny_cnn") else (2,))]
    reg = MODELS["regularized_cnn"]
    out.append(("accumulating", [base.replace(model=MODELS["simple_cnn"], batch_size=b) for b in (16, 32)]))
    out.append(("augmenting", [base.replace(model=reg, augment=AugmentConfig(enabled=on)) for on in (True, False)]))
    out.append(("dropout-varies", [base.replace(model=ModelConfig("regularized_cnn", {**reg.knobs, "dropout_fc": r}))
                                   for r in (0.1, 0.5)]))
    out.append(("mixed-optimizers", [base.replace(model=MODELS["mlp"], optimizer=OptimizerConfig(n, lr=1e-3))
                                     for n in ("sgd", "adam", "rmsprop", "adamw")]))
    return out


def run_one(variants, data, compile):
    pop = Population(variants, data, dtype=torch.float64, compile=compile)
    pop.step(pop.epoch_order(0), pop._js[0])
    return pop.carry["params"], pop.evaluate("val")


def test_own_code_gives_each_compiled_function_its_own_dynamo_cache():
    make = lambda i: (lambda x: x * (i + 1))
    outs = [torch.compile(own_code(torch.func.vmap(make(i))), fullgraph=True, dynamic=False)(torch.ones(2, 3 + i))
            for i in range(12)]  # without own_code: FailOnRecompileLimitHit at the 9th
    assert [float(o[0, 0]) for o in outs] == [float(i + 1) for i in range(12)]


@pytest.mark.slow
def test_more_than_twelve_distinct_compiled_populations_in_one_process():
    data = random_data(n_train=64, n_eval=24)
    results = {name: run_one(vs, data, "aot_eager") for name, vs in cases()}
    assert len(results) >= 12
    for name, vs in cases():  # each compiled population computed its own numbers, not another's
        params, val = run_one(vs, data, False)
        got_params, got_val = results[name]
        for a, b in zip(tree.leaves(got_params), tree.leaves(params)):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(torch.as_tensor(got_val["loss"]), torch.as_tensor(val["loss"]))


@pytest.mark.slow
def test_an_inductor_population_after_them_compiles_and_equals_eager():
    data = random_data(n_train=64, n_eval=24)
    variants = dict(cases())["tiny_cnn-K2"]
    got, got_val = run_one(variants, data, True)  # inductor; the module's other tests filled dynamo's caches
    want, want_val = run_one(variants, data, False)
    for a, b in zip(tree.leaves(got), tree.leaves(want)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.as_tensor(got_val["loss"]), torch.as_tensor(want_val["loss"]))
