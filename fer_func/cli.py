"""The command line, top floor of the package: argv -> RunOptions -> one call.

Every mode starts here: training (``--experiment``, ``--study``, ``--all``, ``--resume``), ``--search``,
``--bench``, ``--list``, and the ``export`` / ``predict`` / ``demo`` subcommands (their own parser in
fer_func/use/cli.py). ``fer-func``, ``python -m fer_func`` and ``python runner.py`` all call
:func:`main`. Nothing in the package imports this module; it imports whatever a mode needs.

A user's mistake (bad key, missing file, ``--device cuda`` without a GPU, a mistyped flag) ends as one
line ``error: ...`` on stderr and exit code 2, never a traceback or a screen of usage. The engine is
imported only once the options are known to be good, so ``--help``, ``--list`` and every usage error
answer without loading it.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from pathlib import Path

from fer_func import runtime
from fer_func.config import ArgumentParser, ConfigError
from fer_func.study import experiments, profiles
from fer_func.study.options import DEFAULT_EXPERIMENTS, BenchOptions, RunOptions, check, e2e_study

STUDIES = ("lr", "optimizer", "batch_size")
FULL_TRAIN = 28709  # FER2013's Training split; the synthetic data has the same size

_USAGE = """\
%(prog)s (--experiment ID_OR_NAME | --study {lr,optimizer,batch_size} | --all | --resume RUN_DIR) [options]
       %(prog)s --search NAME [--trials N] [--method {tpe,random,pbt}] [--study-name NAME] [options]
       %(prog)s --bench [--e2e NAME | --models NAME... --k K...] [options]
       %(prog)s --list | --help | --version
       %(prog)s export RUN_DIR --out FILE [--variant ID|best|ensemble] [--format FORMAT]
       %(prog)s predict MODEL IMAGE... [--csv PATH]
       %(prog)s demo MODEL [--port P] [--host H]"""

_EPILOG = """\
subcommands (each has its own --help):
  export RUN_DIR --out FILE   write a run's best network (or an ensemble) as state_dict, TorchScript or ONNX
  predict MODEL IMAGE...      class probabilities of image files with an exported network (docs/use.md)
  demo MODEL                  a web page to try an exported network on photos (pip install -e '.[demo]')

examples:
  %(prog)s --list
  %(prog)s --study lr                         # experiment 08: 12 variants, one population
  %(prog)s --experiment 04 --epochs 5 --set optimizer.lr=3e-4
  %(prog)s --study batch_size --seeds 3       # mean and 95%% CI over seeds in summary.md
  %(prog)s --all --device cuda --wandb online
  %(prog)s --resume runs/2026-01-01_12-00-00_lr
  %(prog)s --search regularized_cnn --trials 40 --k 8 --method tpe --storage sqlite:///search.db
  %(prog)s --bench --models simple_cnn resnet --k 1 8 32
  %(prog)s --bench --e2e lr --json e2e.json   # the study as a population vs a plain torch loop
  %(prog)s --all --seeds 3 --ray auto --max-k 8  # populations on a Ray cluster, one per device
  %(prog)s export runs/2026-01-01_12-00-00_lr --out model.pt
  %(prog)s predict model.pt face.jpg photos/
"""


def prog() -> str:
    """How this command was started, for usage lines and help: fer-func, python runner.py or python -m fer_func."""
    return runtime.program() or "fer-func"


def version() -> str:
    """The installed distribution's version; from a checkout without an install, the package's own."""
    from importlib import metadata
    try:
        return metadata.version("fer-func")
    except metadata.PackageNotFoundError:
        import fer_func
        return fer_func.__version__


def _csv(kind):
    # "--models a,b c" and "--models a b c" both work.
    return lambda text: [kind(x) for x in text.split(",") if x]


def build_parser(name: str | None = None) -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=name or prog(), usage=_USAGE, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        description="Train FER2013 experiments and hyperparameter studies as compiled, vmapped populations.")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    what = p.add_argument_group("what to run (choose one; or a subcommand: export, predict, demo)")
    what.add_argument("--experiment", metavar="ID_OR_NAME",
                      help="train one experiment by id or name, e.g. 04 or regularized_cnn")
    what.add_argument("--study", choices=STUDIES, help="one hyperparameter study (experiments 08/09/10), trained as one population")
    what.add_argument("--all", action="store_true", help="every experiment; variants sharing a model train as one population")
    what.add_argument("--list", action="store_true", help="list the experiments and studies with their variant counts, then exit")
    what.add_argument("--resume", metavar="RUN_DIR", type=Path, help="continue an interrupted run from its config.toml and checkpoints")
    what.add_argument("--bench", action="store_true", help="time the population engine instead of training (fer_func.bench)")
    what.add_argument("--search", metavar="NAME",
                      help="search the experiment's [search] space: Optuna trials in slots (tpe, random) or PBT, "
                           "one compiled population (docs/search.md)")

    search = p.add_argument_group("search options (with --search)")
    search.add_argument("--trials", type=int, metavar="N", help="trials in the budget (Optuna methods; N > K)")
    search.add_argument("--method", choices=("tpe", "random", "pbt"), help="default: the [search] table's method, else tpe")
    search.add_argument("--storage", metavar="URL",
                        help="Optuna storage: sqlite:///study.db, a FILE.journal, any RDB URL (default: the run "
                             "directory's optuna.journal); see it with optuna-dashboard URL")
    search.add_argument("--study-name", metavar="NAME",
                        help="the Optuna study's name in --storage (default: fer-func-EXPERIMENT-METHOD-sSEED); a name "
                             "the storage already holds is refused: continue that search with --resume RUN_DIR")

    how = p.add_argument_group("how to run it")
    how.add_argument("--experiments", metavar="PATH", type=Path, default=DEFAULT_EXPERIMENTS,
                     help="the experiments file (default: the experiments.toml shipped with fer_func; in a checkout, the "
                          "repository's top-level one)")
    how.add_argument("--profile", metavar="NAME",
                     help="experiments.toml profile: 'full' (the original study's sizes; default on CUDA) or 'cpu' "
                          "(resized for a 2-core CPU; default elsewhere); --list shows them")
    how.add_argument("--data", default="synthetic", metavar="{synthetic,PATH}",
                     help="'synthetic' (default; FER2013-shaped random data, no download) or a path to fer2013.csv")
    how.add_argument("--skip-bad-rows", action="store_true",
                     help="drop a CSV's malformed rows (one warning names their lines) instead of stopping at them")
    how.add_argument("--epochs", type=int, metavar="N", help="override every variant's epochs (same as --set epochs=N)")
    how.add_argument("--train-limit", type=int, metavar="N", help="train on the first N images only (quick runs)")
    how.add_argument("--cv", type=int, metavar="K",
                     help="k-fold cross-validation: K variants per configuration, variant i validates on Training "
                          "fold i and trains on the others (same as --set cv=K)")
    how.add_argument("--seeds", type=int, default=1, metavar="N", help="replicate every configuration with seeds s, s+1, ..., s+N-1")
    how.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto: cuda when available")
    how.add_argument("--no-compile", action="store_true", help="run eagerly (no torch.compile): slower steps, no compile wait")
    how.add_argument("--no-compact", action="store_true",
                     help="keep diverged and early-stopped variants in the step (default: once enough of a population "
                          "has ended that the saved steps outweigh a compile, it goes on with the live ones)")
    how.add_argument("--precision", choices=("fp32", "tf32", "bf16"),
                     help="default tf32 on CUDA, fp32 on a CPU; bf16: bf16 autocast forward, float32 weights and optimizer")
    how.add_argument("--cuda-graphs", action="store_true",
                     help="replay the compiled step as a CUDA graph (torch.compile mode reduce-overhead; CUDA only)")
    how.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="training dtype (default float32; float64 for exact equivalence checks, slow)")
    how.add_argument("--wandb", choices=("offline", "online", "disabled"), default="offline",
                     help="W&B tracking, one run per variant (default offline: no account needed, `wandb sync` later)")
    how.add_argument("--wandb-project", metavar="NAME",
                     help="W&B project of the runs (default: $WANDB_PROJECT, else fer-func)")
    how.add_argument("--wandb-entity", metavar="NAME",
                     help="W&B entity (user or team) of the runs (default: $WANDB_ENTITY, else your default entity)")
    how.add_argument("--out", type=Path, default=Path("runs"), metavar="DIR", help="parent of the run directory (default runs/)")
    how.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a setting of every selected experiment, value in TOML syntax; repeatable: "
                          "--set optimizer.lr=0.01 --set model.knobs.hidden=[256,128] --set grid.batch_size=[32,64]; "
                          "NAME:KEY=VALUE sets one experiment only: --set lr:model.knobs.channels=[16,32,64,128]")

    how.add_argument("--max-k", type=int, metavar="K",
                     help="at most K variants per population: a larger group trains as several (on --ray, in parallel)")

    dist = p.add_argument_group("beyond one device (docs/distributed.md)")
    dist.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                      help="run each population as a Ray task, one per device: --ray alone starts a local Ray "
                           "sized to this machine, --ray auto or --ray HOST:PORT joins a running cluster "
                           "(needs pip install -e '.[ray]')")
    dist.add_argument("--ray-cpus-per-population", dest="ray_cpus", type=int, metavar="N",
                      help="CPUs each population asks for on a cluster without GPUs (default: all of one node's)")
    dist.add_argument("--ray-storage", type=Path, metavar="PATH",
                      help="a path every node sees (NFS, ...) for the workers' checkpoints (default: the run "
                           "directory, right for --ray alone)")

    bench = p.add_argument_group("benchmark options (with --bench)")
    bench.add_argument("--e2e", metavar="NAME",
                       help="time a whole study or experiment end to end, compile included, as the population and "
                            "as a plain torch.nn loop, e.g. --e2e lr (see --list; docs/bench.md)")
    bench.add_argument("--models", nargs="+", type=_csv(str), metavar="NAME", help="models to time")
    bench.add_argument("--k", nargs="+", type=_csv(int), metavar="K",
                       help="population sizes to time; with --search: the number of slots trained at once")
    bench.add_argument("--batch", type=int, metavar="B", help="per-variant batch size")
    bench.add_argument("--steps", type=int, metavar="N", help="timed steps per measurement")
    bench.add_argument("--json", type=Path, metavar="PATH", help="also write the benchmark results as JSON")
    bench.add_argument("--impls", nargs="+", type=_csv(str), metavar="IMPL", help="implementations to time (default: all)")
    bench.add_argument("--bf16", action="store_true", help="time under bf16 autocast")
    bench.add_argument("--distinct-seeds", action="store_true",
                       help="time K replicate seeds (own data order each) instead of a one-seed study grid")
    bench.add_argument("--channels-last", action="store_true", help="channels-last layout for the torch.nn baselines")
    bench.add_argument("--one-at-a-time", action="store_true",
                       help="time each implementation's steps in one block instead of interleaving them round by round")
    return p


def to_options(args: argparse.Namespace) -> RunOptions:
    flat = lambda lists: tuple(x for xs in (lists or []) for x in xs)
    bench_flags = ("e2e", "models", "k", "batch", "steps", "json", "impls", "bf16", "channels_last", "distinct_seeds",
                   "one_at_a_time")
    bench_given = [f"--{n.replace('_', '-')}" for n in bench_flags if getattr(args, n) not in (None, [], False)]
    search_flags = [f"--{n.replace('_', '-')}" for n in ("trials", "method", "storage", "study_name")
                    if getattr(args, n) is not None]
    if search_flags and args.search is None:
        raise ConfigError(f"{', '.join(search_flags)} only apply to --search")
    if args.search is not None:
        bench_given = [f for f in bench_given if f != "--k"]
        if args.k and len(flat(args.k)) != 1:
            raise ConfigError(f"--k {' '.join(map(str, flat(args.k)))}: a search trains one population; give one K")
    if bench_given and not args.bench:
        raise ConfigError(f"{', '.join(bench_given)} only apply to --bench")
    step_only = [f for f in bench_given if f not in ("--e2e", "--json")]
    if args.e2e is not None and step_only:
        raise ConfigError(f"{', '.join(step_only)} cannot be combined with --e2e: it trains the study's own models, "
                          f"variants and batch sizes; change them with --set")
    bench = BenchOptions(models=flat(args.models), k=flat(args.k), batch=args.batch, steps=args.steps,
                         json=args.json, impls=flat(args.impls), bf16=args.bf16,
                         channels_last=args.channels_last, distinct_seeds=args.distinct_seeds,
                         one_at_a_time=args.one_at_a_time, e2e=args.e2e) if args.bench else None
    search = None
    if args.search is not None:
        from fer_func.study.options import SearchOptions
        search = SearchOptions(name=args.search, trials=args.trials, k=flat(args.k)[0] if args.k else None,
                               method=args.method, storage=args.storage, study_name=args.study_name)
    return RunOptions(study=args.study, experiment=args.experiment, all=args.all, resume=args.resume, search=search,
                      experiments=args.experiments, data=args.data, skip_bad_rows=args.skip_bad_rows, epochs=args.epochs, cv=args.cv,
                      train_limit=args.train_limit,
                      seeds=args.seeds, device=args.device, compile=not args.no_compile, compact=not args.no_compact, dtype=args.dtype,
                      precision=args.precision, cuda_graphs=args.cuda_graphs, wandb=args.wandb, wandb_project=args.wandb_project,
                      wandb_entity=args.wandb_entity, out=args.out,
                      overrides=tuple(args.overrides), bench=bench, profile=args.profile, max_k=args.max_k,
                      ray=args.ray, ray_cpus=args.ray_cpus, ray_storage=args.ray_storage)


def listing(path, overrides=(), seeds: int = 1, device: str = "auto", train_limit: int | None = None,
            profile: str | None = None) -> str:
    """The --list table, per profile: every experiment's model, parameters, epochs and estimated time here."""
    from fer_func.models import build_from
    from fer_func.study import estimate
    from fer_func.study.options import resolve_device

    dev = resolve_device(device)
    rate = estimate.peak_gmacs(dev)
    out = [f"device: {dev} (float32 matmul peak {rate:.0f} GMAC/s; times are estimates from counted "
           f"multiply-adds, see fer_func/study/estimate.py)"]
    found = experiments.load_profiles(path)
    default = profiles.default_name(dev) if profiles.default_name(dev) in found else profiles.FULL
    for name in ([profiles.pick(found, profile, Path(path).name).name] if profile else found):
        catalog = experiments.load(path, name)
        prof = found[name]
        n_train = train_limit or prof.train_limit or FULL_TRAIN
        scoped = experiments.scope_overrides(catalog, tuple(overrides))
        rows = [("id", "name", "kind", "variants", "model", "params", "MMAC", "epochs", "est. time", "description")]
        everything = []
        for exp in catalog.values():
            vs = exp.variants(scoped(exp), seeds)
            everything += vs
            model = build_from(vs[0].model)
            epochs = sorted({v.epochs for v in vs})
            est = estimate.seconds(vs, n_train, len(experiments.populations(vs)), dev, rate)
            rows.append((exp.id, exp.name, "study" if exp.is_study else "experiment", str(len(vs)), model.name,
                         f"{model.param_count / 1e6:.2f}M", f"{model.macs / 1e6:.1f}", "/".join(map(str, epochs)),
                         estimate.fmt(est), exp.description))
        groups = len(experiments.populations(everything))
        total = estimate.seconds(everything, n_train, groups, dev, rate)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        out += ["", f"profile {name}{' (default here)' if name == default else ''}: {prof.description}",
                f"  training images: {n_train}; --all --seeds {seeds}: {len(everything)} variants in {groups} "
                f"populations, {estimate.fmt(total)} on {dev}"]
        out += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    return "\n".join(out)


def _check_e2e(options: RunOptions) -> None:
    """An unknown --e2e NAME or a bad --set, as one line before the engine loads."""
    catalog = experiments.load(options.experiments, options.profile_name)
    try:
        experiments.find(catalog, options.bench.e2e)
    except ConfigError:
        raise ConfigError(f"--e2e {options.bench.e2e!r}: no such study or experiment; choose one of "
                          f"{', '.join(catalog)} ({prog()} --list)") from None
    experiments.plan(e2e_study(options))


def _user_errors() -> tuple:
    errors = [ConfigError]
    try:  # the data package is optional here: --list and --help work without it
        from fer_func.data import DataError
        errors.append(DataError)
    except ImportError:
        pass
    return tuple(errors)


def _entry(module: str, what: str):
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} is not available in this installation ({module} is missing)")
    return importlib.import_module(module)


def _is_search_run(options: RunOptions) -> bool:
    """--resume of a search run: its run.json records the search."""
    import json
    return options.resume is not None and "search" in json.loads((Path(options.resume) / "run.json").read_text())


def _tune_malloc() -> None:
    """Re-execute this command under tuned glibc malloc (fer_func/runtime.py), the way it was started.

    ``python runner.py`` and the ``fer-func`` console script are Python files: ``python argv[0] args``
    runs them again with the same sys.path[0] (the checkout, the script's bin/). ``python -m fer_func``
    has its __main__.py as argv[0], which must not run as a file (its folder would shadow the stdlib on
    sys.path): it is re-run as ``-m fer_func`` from the same working directory, so it finds the same
    package. Anything else (``python -c``, an embedding) is left alone.
    """
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None and main_spec.name.startswith("fer_func"):
        runtime.reexec_tuned(["-m", main_spec.name.removesuffix(".__main__"), *sys.argv[1:]])
    elif sys.argv and os.path.isfile(sys.argv[0]):
        runtime.reexec_tuned(sys.argv)


def main(argv=None) -> int:
    """Run one command. ``argv=None`` is a program start (sys.argv, malloc tuned first); a list is a call."""
    if argv is None:
        _tune_malloc()
        argv = sys.argv[1:]
    argv = list(argv)
    if argv[:1] in (["export"], ["predict"], ["demo"]):  # using a trained model: its own parser in fer_func/use/cli.py
        from fer_func.use import cli as use_cli
        return use_cli.main(argv, prog())
    args = build_parser().parse_args(argv)  # usage errors: one line "error: ..." and exit 2 (config.ArgumentParser)
    try:
        options = to_options(args)
        if args.list:
            print(listing(options.experiments, options.all_overrides, options.seeds, options.device,
                          options.train_limit, options.profile))
            return 0
        check(options)
        if options.ray is not None:
            from fer_func.distributed.ray_run import check_installed
            check_installed()  # not installed: one line with the install command
        if options.bench is not None:
            if options.bench.e2e is not None:
                _check_e2e(options)
            return _entry("fer_func.bench", "--bench").main(options) or 0
        if options.search is not None or _is_search_run(options):
            search_run = _entry("fer_func.search.run", "--search (pip install optuna)")
            from fer_func.distributed.ray_search import is_ray_search
            on_ray = options.resume is not None and is_ray_search(options.resume)
            if on_ray and options.ray is None:
                raise ConfigError(f"--resume {options.resume}: this search ran on Ray, one population per device; "
                                  f"resume it with --ray (or --ray ADDRESS)")
            if options.ray is not None or on_ray:
                from fer_func.distributed import ray_search
                run_dir = ray_search.run(options)
            else:
                run_dir = search_run.run(options)
            print(f"run directory: {run_dir}")
            return 0
        experiments.plan(options)  # report a bad experiment or --set before loading the engine
        if options.ray is not None:  # the Ray layer opens its session and runs the study inside it
            from fer_func.distributed import ray_run
            run_dir = ray_run.run(options, model_artifacts=_model_artifacts())
        else:
            run_dir = _entry("fer_func.study.run", "training").run(options, model_artifacts=_model_artifacts())
        print(f"run directory: {run_dir}")
        return 0
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # study/train.py's Interrupted carries the exact resume command once a checkpoint is written.
        print(str(e) or "interrupted; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


def _model_artifacts():
    """What logs each variant's best network to W&B: the application layer's writer, handed to the study."""
    from fer_func.use.artifacts import log_models
    return log_models
