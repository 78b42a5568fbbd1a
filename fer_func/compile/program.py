"""``compile_program``: torch.compile a population's step or eval as a program of its own.

Dynamo keys its cache by the *code object* of the compiled function. Every population's step is
``vmap(step)``, and every ``vmap`` wrapper (like every ``make_train_step`` closure) runs the same
code object, so without care all populations of a process share one cache: the 9th distinct
population (different model, K, batch size...) hits the recompile limit, which ``fullgraph=True``
turns into a hard error, and a lookup walks every other population's guards first. Giving each
program a copy of the code object makes its cache its own: any number of populations coexist, and
none can pick up another's compiled graph. Programs of equal static structure are still shared, through
the keyed cache (cache.py), so a new grid of values never recompiles.
"""
from __future__ import annotations

import types

import torch

from fer_func.compile.precompiled import Precompiled


def own_code(fn):
    """``fn`` with a private copy of its code object (same behaviour, closure, globals and attributes)."""
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__dict__.update(fn.__dict__)
    copy.__qualname__ = fn.__qualname__
    return copy


def compile_options(compile, cuda_graphs: bool = False, device_type: str = "cpu") -> dict:
    """``torch.compile`` options for a population's ``compile`` setting: True is inductor, a string a
    dynamo backend ("aot_eager": dynamo's tracing and caching without inductor's code generation,
    which tests use to build many populations fast); with CUDA graphs, inductor's reduce-overhead mode.

    On the CPU, inductor is told to keep the graph's own memory layout. By default it turns every
    graph with an MKL-DNN convolution channels-last; a population's convolutions are grouped (one
    group per variant) and narrow, and channels-last then costs a transpose between the convolutions'
    layout and every per-variant tensor around them (BatchNorm statistics, dropout masks, pooling
    indices). With ATen's max-pool (nn/pool.py) the lr population's step is faster this way, though its
    convolutions alone are slower (measured A/B on a CPU; the step benchmark in docs/bench.md)."""
    if cuda_graphs:
        return {"mode": "reduce-overhead"}
    backend = compile if isinstance(compile, str) else "inductor"
    if backend == "inductor" and device_type == "cpu":
        return {"backend": backend, "options": {"layout_optimization": False}}
    return {"backend": backend}


def compile_program(fn, key=None, **options):
    """``torch.compile(fn, fullgraph=True, dynamic=False)`` with a dynamo cache private to this program.

    With a ``key`` (the program's static structure) an inductor program is compiled ahead of time
    and saved, so later processes load it instead of tracing it again (precompiled.py); CUDA graphs
    (``mode="reduce-overhead"``) keep the ordinary path."""
    inductor = options.get("backend", "inductor") == "inductor"
    if inductor and key is not None and "mode" not in options and hasattr(torch.compiler, "load_compiled_function"):
        return Precompiled(own_code(fn), options, repr(key))
    return torch.compile(own_code(fn), **{"fullgraph": True, "dynamic": False, **options})
