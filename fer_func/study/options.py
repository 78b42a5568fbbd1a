"""RunOptions: what one ``runner.py`` command asks for, parsed and checked, before anything is loaded.

The CLI fills it; ``fer_func.study.run.run(options)`` consumes it. Checks that need no data or
experiments file (device availability, paths that must exist) happen in :func:`check`, so a user's
mistake is reported before any import of the engine.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from fer_func.config import ConfigError



def _default_experiments() -> Path:
    """The repository's top-level experiments.toml in a checkout; in an installed wheel, the copy its build packaged.

    A checkout is recognised by its pyproject.toml beside the file, so a stray experiments.toml in
    site-packages is never mistaken for it.
    """
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "experiments.toml").is_file():
        return root / "experiments.toml"
    return Path(__file__).resolve().parents[1] / "experiments.toml"  # made by setup.py's build hook


DEFAULT_EXPERIMENTS = _default_experiments()


@dataclass(frozen=True)
class BenchOptions:
    models: tuple[str, ...] = ()       # model names to benchmark; empty = the bench's default set
    k: tuple[int, ...] = ()            # population sizes to time; empty = the bench's default
    batch: int | None = None           # per-variant batch size; None = the bench's default
    steps: int | None = None           # timed steps per measurement; None = the bench's default
    json: Path | None = None           # also write the results here
    impls: tuple[str, ...] = ()        # implementations to time; empty = all (fer_func.bench.impls.IMPLS)
    bf16: bool = False                 # time under bf16 autocast (a GPU option; float32 otherwise)
    channels_last: bool = False        # sequential models and inputs in channels-last layout
    distinct_seeds: bool = False       # K replicate seeds instead of a one-seed study grid
    one_at_a_time: bool = False        # time each implementation's steps in one block, not interleaved
    e2e: str | None = None             # a study or experiment name: time it end to end against a torch loop


@dataclass(frozen=True)
class SearchOptions:
    name: str                      # the experiment whose [search] table is searched (fer_func/study/space.py)
    trials: int | None = None      # Optuna: trials in the budget (default: the table's `trials`)
    k: int | None = None           # slots trained at once (default: the table's `k`)
    method: str | None = None      # tpe | random | pbt (default: the table's `method`, else tpe)
    storage: str | None = None     # any Optuna storage URL or a *.journal path (default: the run directory's)
    worker: int = 0                # which of several populations sharing one study (--ray): offsets the sampler's seed
    study_name: str | None = None  # the Optuna study's name (default fer-func-EXPERIMENT-METHOD-sSEED); a name the
                                   # storage already holds is refused unless --resume (or join)
    join: bool = False             # a --ray population: joins the study its driver checked, instead of refusing it


@dataclass(frozen=True)
class RunOptions:
    # what to run: exactly one of these (list/bench are handled by the CLI and fer_func.bench)
    study: str | None = None           # "lr", "optimizer" or "batch_size"
    experiment: str | None = None      # id or name, e.g. "04" or "regularized_cnn"
    all: bool = False                  # every experiment of the file, grouped into populations
    resume: Path | None = None         # continue the run in this directory from its config.toml + checkpoints
    # how to run it
    experiments: Path = DEFAULT_EXPERIMENTS
    data: str = "synthetic"            # "synthetic" or a path to fer2013.csv / an image folder
    skip_bad_rows: bool = False        # drop a CSV's malformed rows (with a warning) instead of stopping
    epochs: int | None = None          # overrides every variant's epochs
    cv: int | None = None              # k-fold cross-validation of every selected experiment (same as --set cv=k)
    train_limit: int | None = None     # use only the first N training images (quick runs)
    seeds: int = 1                     # replicate every configuration with seeds seed, seed+1, ...
    device: str = "auto"               # "auto" (cuda if available), "cpu" or "cuda"
    compile: bool = True               # torch.compile the population step
    compact: bool = True               # drop ended variants from a population's step once that pays (compaction.py)
    dtype: str = "float32"             # parameter/activation dtype; float64 for exact equivalence checks
    precision: str | None = None       # fp32, tf32 or bf16 (population/precision.py); None: tf32 on CUDA, else fp32
    cuda_graphs: bool = False          # replay the compiled step as a CUDA graph (CUDA only)
    wandb: str = "offline"             # "offline" (sync later), "online" or "disabled"
    wandb_project: str | None = None   # None: $WANDB_PROJECT, else "fer-func" (tracking.project); a resumed run keeps its own
    wandb_entity: str | None = None    # None: $WANDB_ENTITY, else wandb's default entity (your user)
    out: Path = Path("runs")           # each run gets a fresh directory under here
    overrides: tuple[str, ...] = ()    # --set KEY=VALUE, applied in order (epochs comes last)
    bench: BenchOptions | None = None  # set by --bench
    search: SearchOptions | None = None  # set by --search
    profile: str | None = None         # experiments.toml profile; None = "full" on CUDA, "cpu" elsewhere
    max_k: int | None = None           # at most this many variants per population (a larger group is split)
    ray: str | None = None             # "local" (an embedded Ray instance), "auto" or a cluster address
    ray_cpus: int | None = None        # CPUs per population on a CPU-only Ray cluster (default: one node's)
    ray_storage: Path | None = None    # storage the driver and Ray workers share (default: the run directory)

    @property
    def profile_name(self) -> str:
        """The profile this run uses: the one asked for, else the device's default where the file has it,
        else ``full``: a user's own experiments file (often without [profiles]) runs as written."""
        if self.profile is not None:
            return self.profile
        from fer_func.study import experiments, profiles
        name = profiles.default_name(resolve_device(self.device))
        return name if name in experiments.load_profiles(self.experiments) else profiles.FULL

    @property
    def all_overrides(self) -> tuple[str, ...]:
        """--set values plus the --epochs and --cv shorthands."""
        return self.overrides + ((f"epochs={self.epochs}",) if self.epochs is not None else ()) + \
            ((f"cv={self.cv}",) if self.cv is not None else ())


def check(options: RunOptions) -> RunOptions:
    """Reject impossible combinations with a ConfigError naming the option and the fix."""
    picked = [n for n, on in [("--study", options.study is not None), ("--experiment", options.experiment is not None),
                              ("--all", options.all), ("--resume", options.resume is not None),
                              ("--bench", options.bench is not None), ("--search", options.search is not None)] if on]
    if len(picked) != 1:
        raise ConfigError(f"choose exactly one of --study, --experiment, --all, --resume, --bench, --search or --list"
                          f"{' (got ' + ', '.join(picked) + ')' if picked else ''}")
    if options.resume is not None:
        if not any((Path(options.resume) / f).is_file() for f in ("config.toml", "run.json")):
            raise ConfigError(f"--resume {str(options.resume)!r}: no config.toml there; pass a run directory written by runner.py")
        if options.overrides or options.seeds != 1 or options.epochs is not None or options.cv is not None:
            raise ConfigError("--resume continues a run as configured; --set, --seeds, --epochs and --cv cannot change it")
        if options.wandb_project is not None or options.wandb_entity is not None:
            raise ConfigError("--resume continues the run's own W&B runs (project and entity in its run.json); "
                              "drop --wandb-project and --wandb-entity")
    for name, value in [("--epochs", options.epochs), ("--train-limit", options.train_limit), ("--seeds", options.seeds),
                        ("--max-k", options.max_k), ("--ray-cpus-per-population", options.ray_cpus)]:
        if value is not None and value < 1:
            raise ConfigError(f"{name} = {value}: must be a positive integer")
    if options.ray is None and (options.ray_cpus is not None or options.ray_storage is not None):
        raise ConfigError("--ray-cpus-per-population and --ray-storage only apply with --ray")
    if options.ray is not None and options.bench is not None:
        raise ConfigError("--ray does not apply to --bench: a benchmark times this machine; drop --ray")
    if options.data != "synthetic" and not Path(options.data).exists():
        from fer_func.data.fer2013 import not_found
        raise ConfigError(f"--data {not_found(options.data)}")
    if options.search is not None:
        for name, value in (("--trials", options.search.trials), ("--k", options.search.k)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} = {value}: must be a positive integer")
        if options.seeds != 1:
            raise ConfigError("--seeds does not apply to --search; run the search again with --set seed=S")
    resolve_device(options.device)
    return options


def e2e_study(options: RunOptions) -> RunOptions:
    """The study run that ``--bench --e2e NAME`` times: NAME as ``--experiment`` (a study name works there
    too), W&B off, every other option (--train-limit, --epochs, --profile, --seeds, --data, --set) as given."""
    return dataclasses.replace(options, experiment=options.bench.e2e, bench=None, wandb="disabled")


def resolve_device(name: str):
    """"auto" -> cuda when available, else cpu; "cuda" without a GPU is a user error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; use --device cpu (or auto)")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)
