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

from conftest import TINY_POPULATION_SETUP

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
""") + TINY_POPULATION_SETUP + textwrap.dedent("""
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
