"""A default compiled run leaves torch as it shipped: no function, class attribute or module global replaced.

A child process compiles one trivial program first (so inductor's code generation, its C++ back end and
its caches are imported), records every global of every loaded ``torch`` module and every attribute
of every class defined there, then builds a population with the default options, trains a step,
evaluates, and records again. Anything that differs was patched by us.
"""
import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import json, sys, torch

    def snapshot():
        seen = {}
        for name, module in list(sys.modules.items()):
            if not (name == "torch" or name.startswith("torch.")) or module is None:
                continue
            for attr, value in list(vars(module).items()):
                seen[f"{name}.{attr}"] = (id(value), callable(value))
                if isinstance(value, type) and value.__module__ == name:
                    for cattr, cvalue in list(vars(value).items()):
                        seen[f"{name}.{attr}.{cattr}"] = (id(cvalue), callable(cvalue) or isinstance(cvalue, (staticmethod, classmethod)))
        return seen

    torch.compile(lambda t: torch.relu(t) * 2, fullgraph=True)(torch.randn(4, 8))
    from fer_func.config import ModelConfig, OptimizerConfig, VariantConfig
    from fer_func.data.dataset import FERData
    from fer_func.population import Population
    g = torch.Generator().manual_seed(0)
    split = lambda n: (torch.randint(0, 256, (n, 48, 48), dtype=torch.uint8, generator=g), torch.randint(0, 7, (n,), generator=g))
    (tx, ty), (vx, vy), (sx, sy) = split(32), split(16), split(16)
    data = FERData(images={"train": tx, "val": vx, "test": sx}, labels={"train": ty, "val": vy, "test": sy}, source="random")
    model = ModelConfig("regularized_cnn", {"channels": [2, 3], "convs_per_block": 1, "fc": [4], "dropout_conv": 0.2, "dropout_fc": 0.5})
    variants = [VariantConfig(model=model, epochs=1, batch_size=16, seed=s, optimizer=OptimizerConfig("adam", lr=1e-3)) for s in range(2)]
    before = snapshot()
    pop = Population(variants, data)
    pop.train_epoch()
    pop.finish()
    after = snapshot()
    # A function, method or class that is no longer the one torch put there: replaced. (Torch itself
    # rebinds counters, caches and locks while it compiles; those are data, not callables.)
    replaced = sorted(k for k in before if before[k][1] and (k not in after or after[k][0] != before[k][0]))
    print(json.dumps({"replaced": replaced, "checked": len(before)}))
""")

def test_a_default_compiled_run_replaces_nothing_in_torch(tmp_path):
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["checked"] > 10_000  # the snapshot covered dynamo and inductor, not an empty set
    assert result["replaced"] == [], f"torch functions or classes replaced during a run: {result['replaced']}"
