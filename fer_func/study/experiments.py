"""experiments.toml -> typed, validated :class:`~fer_func.config.VariantConfig` lists.

An experiment is a table of settings plus an optional ``grid`` (setting -> list of values) whose
cartesian product makes a study. Loading parses and expands every experiment once, so a typo
anywhere stops the program before anything trains; ``--set key=value`` overrides are applied to
the raw table and re-validated the same way. Every error is a one-line
:class:`~fer_func.config.ConfigError` naming the file, the experiment, the key and the value.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from fer_func.config import ConfigError, ModelConfig, VariantConfig
from fer_func.study import profiles, resolved
# A variant's table is parsed in tables.py (shared with resolved.py and space.py); the names other modules reach
# through this one (experiments.variant_id, .read_toml, ._put) stay importable from here.
from fer_func.study.tables import META as _META, _get, _put, parse_variant, read_toml, variant_id


@dataclass(frozen=True)
class Experiment:
    name: str                 # the table name, e.g. "regularized_cnn"; also the --experiment/--study key
    id: str                   # the experiment number, e.g. "04"
    description: str
    table: dict               # raw settings (no id/description/grid)
    grid: dict = field(default_factory=dict)  # dotted setting -> list of values; empty = one variant
    source: str = "experiments.toml"
    search: dict | None = None  # raw `search` table (fer_func/study/space.py), None if the experiment has none

    def space(self):
        """The experiment's search space (fer_func.study.space.Space), checked; ConfigError if it has none."""
        from fer_func.study import space  # space parses its points with tables.py, as this module does
        where = f"{self.source}: experiment {self.name!r} ({self.id})"
        if self.search is None:
            raise ConfigError(f"{where} has no [experiments.{self.name}.search] table; add one (docs/search.md)")
        parsed = space.parse(where, self.search)
        space.corners(parsed, self.table, experiment=self.name, seed=int(self.table.get("seed", 0)), where=where)
        return parsed

    @property
    def is_study(self) -> bool:
        return bool(self.grid)

    @property
    def size(self) -> int:
        """Variants per seed: the product of the grid's list lengths."""
        n = 1
        for values in self.grid.values():
            n *= len(values)
        return n

    def variants(self, overrides: tuple[str, ...] = (), seeds: int = 1) -> list[VariantConfig]:
        """The experiment's grid expanded (after ``--set`` overrides), replicated over ``seeds`` seeds."""
        return _expand(self, overrides, seeds)


def load(path, profile: str = profiles.FULL) -> dict[str, Experiment]:
    """Parse, type-check and expand every experiment of ``path`` under ``profile``; keyed by name in file order.

    Every profile of the file is validated too, so a typo in any of them stops every command.
    """
    path = Path(path)
    tables, found = _read(path)
    chosen = profiles.pick(found, profile, path.name)
    for other in found.values():
        if other is not chosen:
            _catalog(path, tables, other)
    return _catalog(path, tables, chosen)


def load_profiles(path) -> dict[str, profiles.Profile]:
    """The profiles of ``path`` (``full`` first), unvalidated beyond their own keys."""
    return _read(Path(path))[1]


def profile_of(path, name: str) -> profiles.Profile:
    return profiles.pick(load_profiles(path), name, Path(path).name)


def _read(path: Path):
    doc = read_toml(path, f"experiments file not found: {str(path)!r}; pass --experiments PATH", path.name)
    unknown = set(doc) - {"experiments", "profiles"}
    if unknown:
        raise ConfigError(f"{path.name}: unknown top-level key(s) {sorted(unknown)}; only [experiments.NAME] and "
                          f"[profiles.NAME] tables are allowed")
    tables = doc.get("experiments", {})
    if not tables:
        raise ConfigError(f"{path.name}: no [experiments.NAME] tables found")
    return tables, profiles.read(doc, path.name, list(tables))


def _catalog(path: Path, tables: dict, profile: profiles.Profile) -> dict[str, Experiment]:
    catalog, ids = {}, {}
    for name, table in tables.items():
        where = f"{path.name}: experiment {name!r}" + (f" (profile {profile.name!r})" if profile.overlays.get(name) else "")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table, got {table!r}")
        table = profile.apply(name, table)
        exp_id = table.get("id", name)
        if not isinstance(exp_id, str):
            raise ConfigError(f"{where}: id = {exp_id!r}: must be a string, e.g. id = \"04\"")
        if exp_id in ids:
            raise ConfigError(f"{where}: id = {exp_id!r} is already used by experiment {ids[exp_id]!r}")
        ids[exp_id] = name
        exp = Experiment(name=name, id=exp_id, description=str(table.get("description", "")),
                         table={k: v for k, v in table.items() if k not in _META},
                         grid=_flatten_grid(where, table.get("grid", {})), source=path.name,
                         search=table.get("search"))
        exp.variants()  # validate now: a typo in any experiment stops every command
        if exp.search is not None and importlib.util.find_spec("optuna") is not None:
            exp.space()
        catalog[name] = exp
    return catalog


def find(catalog: dict[str, Experiment], key: str, *, study: bool = False) -> Experiment:
    """The experiment whose name or id is ``key`` (``"04"``, ``"4"`` or ``"regularized_cnn"``)."""
    pool = {n: e for n, e in catalog.items() if e.is_study or not study}
    for exp in pool.values():
        if key in (exp.name, exp.id) or (key.isdigit() and exp.id.isdigit() and int(key) == int(exp.id)):
            return exp
    what = "study" if study else "experiment"
    choices = ", ".join(n if study else f"{e.id}/{n}" for n, e in pool.items())
    raise ConfigError(f"unknown {what} {key!r}; choose one of {choices}")


def select(catalog: dict[str, Experiment], *, experiment: str | None = None, study: str | None = None,
           all: bool = False, overrides: tuple[str, ...] = (), seeds: int = 1) -> list[VariantConfig]:
    """The variants a command trains: one experiment, one study, or every experiment (``all``).

    An override ``NAME:KEY=VALUE`` (``lr:model.knobs.channels=[16,32]``, or with the id, ``08:...``)
    applies to that experiment only, so one experiment of ``--all`` can be resized alone.
    """
    if sum([experiment is not None, study is not None, all]) != 1:
        raise ConfigError("choose exactly one of --experiment, --study and --all")
    if all:
        chosen = list(catalog.values())
    else:
        chosen = [find(catalog, study if study is not None else experiment, study=study is not None)]
    scoped = scope_overrides(catalog, overrides)
    return [v for exp in chosen for v in exp.variants(scoped(exp), seeds)]


def scope_overrides(catalog: dict[str, Experiment], overrides: tuple[str, ...]):
    """``exp -> the overrides that apply to it``: unscoped ones to every experiment, ``NAME:...`` to one."""
    parsed = []
    for text in overrides:
        head, eq, _ = text.partition("=")
        target, colon, key = head.partition(":")
        if colon and eq:
            exp = find(catalog, target.strip())  # an unknown name is a ConfigError listing the choices
            parsed.append((exp.name, text[len(target) + 1:]))
        else:
            parsed.append((None, text))
    return lambda exp: tuple(t for name, t in parsed if name in (None, exp.name))


def plan(options) -> list[VariantConfig]:
    """The variants a :class:`~fer_func.study.options.RunOptions` asks for: its selection from the
    experiments file (with --set/--epochs/--seeds), or a resumed run's config.toml."""
    if options.resume is not None:
        return resolved.load(options.resume)
    return select(load(options.experiments, options.profile_name), experiment=options.experiment, study=options.study, all=options.all,
                  overrides=options.all_overrides, seeds=options.seeds)


def check_dataset(variants: list[VariantConfig], n_train: int) -> None:
    """Checks that need the training-set size (known once the data is loaded)."""
    for v in variants:
        if v.batch_size > n_train:
            raise ConfigError(f"experiment {v.experiment!r} ({variant_id(v)}): batch_size = {v.batch_size}: larger than "
                              f"the training set ({n_train} images); lower batch_size or raise --train-limit")


def populations(variants: list[VariantConfig], key=None) -> list[list[VariantConfig]]:
    """Group variants that can train as one compiled, vmapped population, in first-seen order.

    ``key`` maps a variant to a hashable group key. The default, :func:`population_key`, groups by
    what fer_func.population.plan requires to be shared (the model, the epochs and the augmentation
    settings; variants may still switch augmentation on or off) and by batch size, see there.
    """
    key = key or population_key
    groups: dict = {}
    for v in variants:
        groups.setdefault(key(v), []).append(v)
    return list(groups.values())


def split(groups: list[list[VariantConfig]], max_k: int | None) -> list[list[VariantConfig]]:
    """Each group of more than ``max_k`` variants as the fewest populations of at most ``max_k``, sizes
    as equal as possible (12 at max_k 8: 6 + 6, not 8 + 4, so populations on parallel devices finish
    together). Order is kept. A variant trains the same in any population (tests/test_population.py),
    except in a batch-size study, whose micro-batch is the gcd of its population's batch sizes.
    """
    if max_k is None:
        return groups
    out = []
    for group in groups:
        n = -(-len(group) // max_k)
        size, extra = divmod(len(group), n)
        start = 0
        for i in range(n):
            end = start + size + (i < extra)
            out.append(group[start:end])
            start = end
    return out


def population_key(v: VariantConfig) -> tuple:
    """Variants with equal keys train together.

    Batch size is part of the key unless the variant's own study varies it: a population steps in
    micro-batches of gcd(batch sizes), so mixing a batch-16 variant into a batch-64 group would make
    every member accumulate over 16-sample micro-batches (ghost batch norm with BatchNorm, other
    dropout and augmentation draws). A batch-size study accepts that (it is its point and is
    documented); every other variant keeps exactly the run it would have alone.
    """
    batches = ("study", v.experiment) if "batch_size" in v.hparams else v.batch_size
    # Cross-validation variants train on per-fold index sets and validate on folds: their own population.
    return model_key(v.model), v.epochs, dataclasses.replace(v.augment, enabled=True), batches, v.cv


def model_key(model: ModelConfig) -> tuple:
    return (model.name, json.dumps(model.knobs, sort_keys=True))


# --- grids and overrides ---------------------------------------------------------------------

def _flatten_grid(where: str, grid, prefix: str = "") -> dict:
    # TOML turns `optimizer.lr = [...]` into {"optimizer": {"lr": [...]}}; lists end a path.
    if not isinstance(grid, dict):
        raise ConfigError(f"{where}: grid{'.' + prefix if prefix else ''} = {grid!r}: must be a table of lists")
    axes = {}
    for k, v in grid.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            axes.update(_flatten_grid(where, v, key + "."))
        elif isinstance(v, list) and v:
            axes[key] = v
        else:
            raise ConfigError(f"{where}: grid.{key} = {v!r}: must be a non-empty list of values")
    return axes


def parse_override(text: str) -> tuple[str, object]:
    """``"optimizer.lr=0.01"`` -> ``("optimizer.lr", 0.01)``; the value is TOML, a bare word is a string."""
    key, eq, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not eq or not key or not raw:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optimizer.lr=0.01")
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if raw.replace("_", "").replace("-", "").isalnum():
            return key, raw  # `--set optimizer.name=sgd` without shell-escaped quotes
        raise ConfigError(f"--set {text!r}: {raw!r} is not a TOML value (numbers, true/false, \"strings\", [lists])") from None


def _label(where: str, key: str, value):
    if isinstance(value, dict):
        if "label" in value or "name" in value:
            return value.get("label", value.get("name"))
        raise ConfigError(f"{where}: grid.{key}: entry {value!r} needs a `name` or `label` to tell it apart")
    return value


def _expand(exp: Experiment, overrides: tuple[str, ...], seeds: int) -> list[VariantConfig]:
    if not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds = {seeds!r}: must be a positive integer")
    try:
        return _expand_with(f"{exp.source}: experiment {exp.name!r} ({exp.id})", exp, overrides, seeds)
    except ConfigError as e:
        if not overrides:
            raise
        first_error = e
    # The file alone was valid (load checked it), so a --set broke it: name the first one that does, not the file.
    where = f"experiment {exp.name!r} ({exp.id})"
    for i, text in enumerate(overrides):
        try:
            _expand_with(where, exp, overrides[:i + 1], seeds)
        except ConfigError as e:
            message = str(e)
            raise ConfigError(message if message.startswith("--set ") or f"--set {text}" in message
                              else f"--set {text}: {message}") from None
    raise first_error


def _expand_with(where: str, exp: Experiment, overrides: tuple[str, ...], seeds: int) -> list[VariantConfig]:
    table, grid, sets = copy.deepcopy(exp.table), dict(exp.grid), []
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith("grid."):
            grid.update(_flatten_grid(where, {key[5:]: value}))
        else:
            _put(where, table, key, value)
            # a later --set of the same key wins; only the grid may not overwrite it
            sets = [s for s in sets if s[1] != key] + [(text, key, value)]
    for key, values in grid.items():
        labels = [json.dumps(_label(where, key, v)) for v in values]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{where}: grid.{key} = {values!r}: repeated values; give table entries distinct `label`s")
    variants = []
    for point in itertools.product(*grid.values()):
        raw = copy.deepcopy(table)
        for key, value in zip(grid, point):
            _put(where, raw, key, copy.deepcopy(value), merge=True)
        for text, key, value in sets:
            if _get(raw, key) != value:
                raise ConfigError(f"{where}: --set {text} is overwritten by the grid; change the grid instead, "
                                  f"e.g. --set grid.{next((k for k in grid if key.startswith(k) or k.startswith(key)), key)}=[...]")
        hparams = {k: _label(where, k, x) for k, x in zip(grid, point)}
        label = ",".join(f"{k}={x}" for k, x in hparams.items())
        v = parse_variant(f"{where}{', grid ' + label if label else ''}", raw, experiment=exp.name, hparams=hparams)
        # cv = k: one variant per fold (validating on it, training on the others), each with its seeds.
        folds = [v.replace(fold=f, hparams={**v.hparams, "fold": f}) for f in range(v.cv)] if v.cv and v.fold < 0 else [v]
        variants += [f.replace(seed=f.seed + i) for f in folds for i in range(seeds)]
    ids = [variant_id(v) for v in variants]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: two variants share an id ({sorted(i for i in ids if ids.count(i) > 1)[0]}); "
                          f"a seed grid cannot be combined with --seeds")
    return variants
