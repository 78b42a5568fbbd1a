"""What the cold-compile experiments in scripts/ share (compile_floor, compile_times, compile_ab, flat_update): the profile's ``--all`` variants, CPU seconds, a child over an empty cache.

A cold compile is measured in a child process over an empty inductor cache, so neither this
process's in-memory caches nor the machine's disk cache can answer: what a user's first run pays.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile


def all_variants(profile: str) -> list:
    """Every variant ``runner.py --all --seeds 1`` trains under ``profile``, from the project's experiments.toml."""
    from fer_func.study import experiments
    from fer_func.study.options import DEFAULT_EXPERIMENTS

    return experiments.select(experiments.load(DEFAULT_EXPERIMENTS, profile), all=True)


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (g++ runs in children)."""
    return sum(getattr(resource.getrusage(who), field) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for field in ("ru_utime", "ru_stime"))


def start_inductor():
    """Compile a trivial program: a process's one-off compile set-up (imports, inductor's start, its
    first g++ run), paid here so that what is timed next is only its own graph."""
    import torch

    torch.compile(lambda t: torch.relu(t) * 2 + 1, fullgraph=True)(torch.linspace(-1, 1, 64).reshape(4, 16))


def run_in_empty_cache(cmd: list[str], env: dict | None = None, cwd=None) -> dict:
    """Run ``cmd`` with an inductor cache of its own (deleted afterwards) and ``env`` added to this
    process's environment; its last stdout line, parsed as JSON. The child's TMPDIR is that directory
    too: inductor keeps its precompiled headers under the temporary directory, whatever its cache
    directory, and a first run on a machine builds them."""
    with tempfile.TemporaryDirectory(prefix="fer-func-inductor-") as cache:
        out = subprocess.run(cmd, env={**os.environ, **(env or {}), "TORCHINDUCTOR_CACHE_DIR": cache, "TMPDIR": cache},
                             cwd=cwd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child_in_empty_cache(script: str, *args: str) -> dict:
    """Run ``python script *args`` over an empty inductor cache (:func:`run_in_empty_cache`)."""
    return run_in_empty_cache([sys.executable, str(script), *args])
