"""A compiled program saved after its first compile and loaded, not traced again, by later processes.

A warm ``torch.compile`` still runs dynamo: it traces ``vmap(grad(step))`` through Python before
inductor's cache can answer, which was most of a population's warm start. PyTorch's ahead-of-time path
(``torch.compile(fn).aot_compile``, ``torch.compiler.load_compiled_function``) saves all of it,
dynamo's bytecode and guards and inductor's code, in one file; loading that file is a small fraction
of tracing again, and a cold compile costs about what it did (measured side by side).

The file lives in inductor's cache directory (``TORCHINDUCTOR_CACHE_DIR``), so emptying that one
directory is still a cold start. Its name hashes everything that decides the compiled code: the
program's static structure, each input's shape, stride and dtype, the compile options, torch's and
Python's versions, the CPU (its flags and ATen's vector capability), and the source of every fer_func module, so an edited
model or optimizer never loads an old program. Guards are checked on every call, as dynamo checks
them; inputs that fail them (a population of another K sharing the program) get a program of
their own. Where this path fails (a torch without it, something it cannot save), the program is
compiled the ordinary way, with one warning.
"""
from __future__ import annotations

import hashlib
import platform
import sys
import warnings
from pathlib import Path

import torch

from fer_func import tree

_SOURCE: str | None = None


def source_hash() -> str:
    """sha256 of fer_func's own source files (computed once per process)."""
    global _SOURCE
    if _SOURCE is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for path in sorted([*root.rglob("*.py"), *root.rglob("*.cpp")]):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _SOURCE = h.hexdigest()
    return _SOURCE


def signature(args) -> str:
    """The inputs as the compiled code sees them: the tree's structure and each leaf's metadata."""
    leaves, spec = tree.flatten(args)
    meta = [f"{x.dtype}{tuple(x.shape)}{x.stride()}{x.device}{x.requires_grad}" if isinstance(x, torch.Tensor)
            else repr(x) for x in leaves]
    return f"{spec}|{'|'.join(meta)}"


def environment() -> str:
    # The CPU by its flags and ATen's vector capability, not by inductor's ISA probe: that probe compiles
    # and loads a test library per ISA, and asking it here would put it in front of every first trace.
    from fer_func.runtime import cpu_flags
    cpu = hashlib.sha256(cpu_flags().encode()).hexdigest()[:16]
    return (f"torch {torch.__version__} | python {sys.version} | {platform.machine()} | "
            f"{torch.backends.cpu.get_cpu_capability()} {cpu} | {source_hash()}")


def _on_cpu(args) -> bool:
    return any(isinstance(x, torch.Tensor) and x.device.type == "cpu" for x in tree.leaves(args))


def directory() -> Path:
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    return Path(cache_dir()) / "fer_func_programs"


class Precompiled:
    """``torch.compile(fn, fullgraph=True, dynamic=False, **options)``, saved and loaded ahead of time.

    ``key`` names the program's static structure (its key in the program cache, cache.py), which the inputs'
    metadata alone does not: two models with equal parameter shapes compute different things.
    """

    def __init__(self, fn, options: dict, key: str):
        self._fn, self._options, self._key = fn, options, key
        self._programs: list = []  # one per input signature seen, most recent first
        self._plain = None  # the ordinary torch.compile, once the ahead-of-time path has failed
        self.loaded = 0  # programs this object loaded from disk rather than compiled (tests read it)

    def __call__(self, *args):
        if self._plain is not None:
            return self._plain(*args)
        for program in self._programs:
            if program.guard_check(*args):
                return program(*args)
        try:
            program = self._obtain(args)
        except Exception as e:  # noqa: BLE001 - any failure of this optional path falls back to the usual one
            warnings.warn(f"ahead-of-time compile unavailable ({type(e).__name__}: {e}); compiling the usual way, "
                          "which traces the program again in every process", stacklevel=2)
            self._plain = torch.compile(self._fn, fullgraph=True, dynamic=False, **self._options)
            return self._plain(*args)
        program.disable_guard_check()  # checked above, once per call
        self._programs.insert(0, program)
        return program(*args)

    def path(self, args) -> Path:
        text = f"{self._key}\n{self._options}\n{signature(args)}\n{environment()}"
        return directory() / f"{hashlib.sha256(text.encode()).hexdigest()}.bin"

    def _obtain(self, args):
        path = self.path(args)
        if path.is_file():
            try:
                with open(path, "rb") as f:
                    program = torch.compiler.load_compiled_function(f)
                if program.guard_check(*args):
                    self.loaded += 1
                    return program
            except Exception:  # noqa: BLE001 - a file from an incompatible build: compile and replace it
                pass
        program = torch.compile(self._fn, fullgraph=True, dynamic=False, **self._options).aot_compile((args, {}))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            program.save_compiled_function(str(path))  # a temporary file renamed over the target
        except Exception as e:  # noqa: BLE001 - this process keeps its program; the next one compiles again
            warnings.warn(f"could not save the compiled program to {path} ({type(e).__name__}: {e})", stacklevel=3)
        return program
