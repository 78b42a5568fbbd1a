"""``runner.py ... --ray``: a run's populations as Ray tasks, one population per device.

    driver: connect (embedded or a cluster) -> data into the object store once
            -> one task per population (1 GPU, or N CPUs on a CPU-only cluster), all submitted at once;
               Ray starts as many as the cluster has devices for
            -> outcomes gathered as they finish, into the one run directory (run.py does the report)
    worker: study/train.py's train_population, the same code a local run loops over, with its
            checkpoints in the storage the driver and the workers share

:func:`run` is where a ``--ray`` study starts (the CLI calls it): it opens the Ray session and runs
study/run.py's ``run`` with this module passed in, so the study layer below never imports this one.

A worker that dies (killed, node lost) is retried by Ray up to ``MAX_RETRIES`` times; the retry
finds the population's last epoch checkpoint in the shared storage and continues from there, so
the numbers are those of an uninterrupted run. Ctrl-C on the driver cancels the tasks; every
checkpoint stays and ``--resume RUN_DIR`` continues, with ``--ray`` or without.

Ray is imported only here, and only with ``--ray``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

from fer_func.config import ConfigError

MAX_RETRIES = 3      # retries of a population whose worker died; each resumes from its last checkpoint
POLL_S = 0.5         # how often the driver looks at Ctrl-C while it waits for populations
NOT_INSTALLED = "--ray: Ray is not installed here; pip install -e '.[ray]' (or pip install 'ray[default]')"


def check_installed() -> None:
    """``--ray`` without Ray: one line with the install command (without importing Ray)."""
    import importlib.util
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(NOT_INSTALLED)


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(NOT_INSTALLED) from None
    return ray


def _reachable(address: str) -> None:
    """A host:port that nothing answers on is a user's mistake: say so now, not after Ray's long retries."""
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray {address!r}: not an address; give HOST:PORT of a cluster's head "
                          f"(as `ray start --head` prints), 'auto', or --ray alone for a local instance")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                          f"`ray start --head` and pass --ray auto, or pass --ray alone for a local instance") from None


def run(options, **hooks) -> Path:
    """A ``--ray`` study run: study/run.py's ``run`` inside a Ray session, its populations as Ray tasks."""
    from fer_func.study import run as study_run

    with session(options.ray):
        return study_run.run(options, ray_run=sys.modules[__name__], **hooks)


@contextlib.contextmanager
def session(address: str):
    """Ray for the length of a run: started (``local``) or joined, shut down after unless the process
    had already called ``ray.init`` (a notebook's or a test's instance is left as it was)."""
    ray = import_ray()
    if ray.is_initialized():
        yield
        return
    connect(address)
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _stderr_held_back():
    """Hold file descriptor 2 in a temporary file: Ray's C++ client logs a warning a second while it
    retries a cluster that refuses it (about 20), which would bury the one-line error. Yields a
    function returning what was held."""
    sys.stderr.flush()
    saved, tmp = os.dup(2), tempfile.TemporaryFile(mode="w+b")
    os.dup2(tmp.fileno(), 2)
    try:
        yield lambda: (tmp.seek(0), tmp.read().decode(errors="replace"))[1]
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def connect(address: str) -> None:
    """Start the embedded instance (``local``) or join the cluster at ``address`` ('auto': the one this
    machine belongs to)."""
    ray = import_ray()
    quiet = {"include_dashboard": False, "log_to_driver": True, "configure_logging": True,
             "logging_level": "warning"}
    if address == "local":
        ray.init(num_cpus=os.cpu_count(), **quiet)
        return
    if address != "auto":
        _reachable(address)
    try:
        with _stderr_held_back() as held:
            ray.init(address=address, **quiet)
        sys.stderr.write(held())  # joined: whatever Ray said is shown after all
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        auth = "" if address == "auto" or os.environ.get("RAY_AUTH_MODE") else (
            "; a cluster with token authentication (Ray >= 2.59's default) also needs RAY_AUTH_MODE=token and "
            "its token (`ray get-auth-token` on the head) here")
        raise ConfigError(f"--ray {address}: cannot join a Ray cluster ({first}){auth}; start one with "
                          f"`ray start --head` and pass --ray auto, or pass --ray alone for a local instance") from None


def _nodes() -> list[dict]:
    """The resources of each live node of the cluster."""
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def device_and_resources(device_option: str, cpus: int | None) -> tuple[torch.device, dict]:
    """The device each population gets and the resources its task asks for: one GPU when the cluster
    has GPUs (unless --device cpu), else ``cpus`` CPUs (default: all of the largest node's). Either way
    the resources name ``num_cpus``: the threads a CPU population runs."""
    nodes = _nodes()
    gpus = sum(n.get("GPU", 0) for n in nodes)
    node_cpus = max((int(n.get("CPU", 0)) for n in nodes), default=0)
    if device_option == "cuda" and gpus < 1:
        raise ConfigError("--device cuda: the Ray cluster has no GPU; use --device cpu (or auto)")
    if device_option != "cpu" and gpus >= 1:
        return torch.device("cuda"), {"num_gpus": 1, "num_cpus": 1}
    n = cpus or node_cpus
    if n > node_cpus:
        raise ConfigError(f"--ray-cpus-per-population {n}: no node of the cluster has {n} CPUs (the largest has "
                          f"{node_cpus}); pass at most {node_cpus}")
    return torch.device("cpu"), {"num_cpus": n}


def device_count(resources: dict) -> int:
    """How many populations the cluster can train at once with ``resources`` each."""
    nodes = _nodes()
    if "num_gpus" in resources:
        return max(1, int(sum(n.get("GPU", 0) for n in nodes)))
    return max(1, sum(int(n.get("CPU", 0)) // resources["num_cpus"] for n in nodes))


def describe(resources: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in resources.items())


def storage_dir(options, run_dir: Path) -> Path:
    """Where workers write checkpoints and placements: ``--ray-storage/RUN_NAME``, else the run directory
    (the embedded instance's workers share this machine's disk)."""
    root = options.ray_storage
    if root is None and options.resume is not None:
        root = json.loads((Path(run_dir) / "run.json").read_text()).get("ray_storage")
    return Path(root) / Path(run_dir).name if root else Path(run_dir)


def start_worker(path: Path, device: str, cpus: int) -> dict:
    """In a worker, before its population: torch's threads for a CPU population, and this attempt's
    node, process and device appended to ``path`` (a retried population has several entries, written
    atomically so a worker killed mid-write leaves the previous list). Returns the placement the run's
    results record."""
    import ray

    from fer_func.study.checkpoint import atomic_write

    if device == "cpu":
        torch.set_num_threads(cpus)
    attempts = json.loads(path.read_text())["attempts"] if path.exists() else []
    attempts.append({"node": ray.util.get_node_ip_address(), "host": socket.gethostname(), "pid": os.getpid(),
                     "device": device, "gpu_ids": [str(i) for i in ray.get_gpu_ids()], "cpus": cpus,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    atomic_write(path, json.dumps({"attempts": attempts}).encode())
    last = attempts[-1]
    return {"node": last["node"], "host": last["host"], "placed_on": device, "gpu_ids": last["gpu_ids"],
            "attempts": len(attempts)}


def _population_task(spec: dict, data) -> dict:
    """One population on the device Ray gave this worker (runs in the worker process)."""
    from fer_func.runtime import machine
    from fer_func.study.train import train_population

    device = torch.device(spec["device"])
    storage = Path(spec["storage"])
    placement = start_worker(storage / "placement" / f"population-{spec['g']}.json", device.type, spec["cpus"])
    group, g, n = spec["group"], spec["g"], spec["n_groups"]

    def on_epoch(record):
        print(f"pop {g + 1}/{n} {group[0].model.name} K={len(group)} epoch {int(record['epoch']) + 1}: best val "
              f"{100 * float(record['val_acc'].max()):.1f}%", flush=True)

    out = train_population(group, g, n, data, spec["options"], device, spec["run_dir"], spec["need"],
                              spec["chosen"], checkpoints=storage / "checkpoints", on_epoch=on_epoch,
                              progress_bar=False)
    out["placement"] = {**placement, "worker": machine(device)}
    return out


def _sync(src: Path, dst: Path) -> None:
    """Copy the checkpoints in ``src`` that ``dst`` lacks or has older (by modification time)."""
    if not src.is_dir() or src.resolve() == dst.resolve():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.glob("population-*.pt"):
        target = dst / f.name
        if not target.exists() or target.stat().st_mtime < f.stat().st_mtime:
            shutil.copy2(f, target)


def populations(options, run_dir: Path, groups: list, data, device: torch.device, resources: dict, need, chosen,
                stop=lambda: False):
    """Train every population as a Ray task; yield their outcomes (train_population's) as they finish."""
    import ray

    storage = storage_dir(options, run_dir)
    (storage / "checkpoints").mkdir(parents=True, exist_ok=True)
    _sync(Path(run_dir) / "checkpoints", storage / "checkpoints")  # a run started locally, resumed on Ray
    task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, **resources)(_population_task)
    data_ref = ray.put(data)  # once, into the object store; every worker reads it from there
    pending = {}
    for g, group in enumerate(groups):
        spec = {"group": group, "g": g, "n_groups": len(groups), "options": options, "device": str(device),
                "cpus": resources["num_cpus"], "storage": str(storage), "run_dir": str(run_dir), "need": need, "chosen": chosen}
        pending[task.remote(spec, data_ref)] = g
    print(f"ray: {len(groups)} populations submitted, each on {device.type} ({describe(resources)}); "
          f"checkpoints in {storage}", flush=True)
    # as populations finish or stop, their checkpoints into the run directory: --resume works without the storage
    for _, outcome in gather(pending, run_dir, stop, on_done=lambda: _sync(storage / "checkpoints",
                                                                           Path(run_dir) / "checkpoints")):
        yield outcome


def gather(pending: dict, run_dir, stop=lambda: False, on_done=lambda: None):
    """Yield ``(key, result)`` for the task references in ``pending`` (ref -> key) as they finish.

    A task that raised re-raises its own error here (a ConfigError stays one line); one whose worker
    died more often than Ray retries is a RuntimeError naming the resume command; Ctrl-C (or
    ``stop()``) cancels the rest and raises study/train.py's Interrupted, checkpoints kept.
    """
    import ray
    from ray.exceptions import RayError, RayTaskError

    from fer_func.study.train import Interrupted

    pending = dict(pending)
    try:
        while pending:
            if stop():
                raise KeyboardInterrupt
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in done:
                key = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except RayTaskError as e:  # the worker raised: the same error as a local run would
                    cause = getattr(e, "cause", None)
                    raise (cause if isinstance(cause, Exception) else e) from None
                except RayError as e:  # its worker died more often than Ray retries
                    raise RuntimeError(f"population {key}: its worker died {MAX_RETRIES + 1} times "
                                       f"({type(e).__name__}); its checkpoints are kept: "
                                       f"python runner.py --resume {run_dir} [--ray ...]") from None
                on_done()
                yield key, result
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        on_done()
        raise Interrupted.at(run_dir) from None
