"""Profiles: named overlays of experiments.toml that resize the study for a smaller machine.

The ``[experiments.NAME]`` tables are the original study at full size: the ``full`` profile is
those tables as written. Any other profile is a table of overlays::

    [profiles.cpu]
    description = "2-core CPU: ..."
    train_limit = 8000                    # train on the first N Training images (val/test stay whole)

    [profiles.cpu.large_cnn]              # merged into [experiments.large_cnn]
    model.knobs.channels = [8, 16, 32, 64, 64]
    epochs = 12

An overlay merges table by table (``model.knobs`` keeps the knobs it does not name) and replaces
everything else, lists included; it may touch a study's ``grid`` the same way. A profile changes
only what must change for the machine (widths, epochs, a training subset), so every experiment
keeps its contrast. ``--profile`` picks one; the default is ``full`` on CUDA and ``cpu`` elsewhere.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from fer_func.config import ConfigError

FULL = "full"
_SETTINGS = {"description": str, "train_limit": int}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    train_limit: int | None = None          # None: the whole Training split
    overlays: dict = field(default_factory=dict)  # experiment name -> table merged into it

    def apply(self, name: str, table: dict) -> dict:
        """Experiment ``name``'s table with this profile's overlay merged in (a new dict)."""
        return merge(table, self.overlays.get(name, {}))


def merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def default_name(device) -> str:
    """``full`` on a GPU, ``cpu`` otherwise (``device`` is a torch.device or its type as a string)."""
    return FULL if str(getattr(device, "type", device)) == "cuda" else "cpu"


def read(doc: dict, source: str, experiment_names) -> dict[str, Profile]:
    """The profiles of a parsed experiments file, ``full`` first; every mistake is a ConfigError."""
    found = {FULL: Profile(FULL, "the original study at full size (the [experiments] tables as written)")}
    tables = doc.get("profiles", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: profiles = {tables!r}: must be a table of [profiles.NAME] tables")
    for name, table in tables.items():
        where = f"{source}: profile {name!r}"
        if name == FULL:
            raise ConfigError(f"{where}: 'full' is the [experiments] tables themselves; edit those, or name the profile otherwise")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table, e.g. [profiles.{name}]")
        settings, overlays = {}, {}
        for key, value in table.items():
            if key in _SETTINGS:
                typ = _SETTINGS[key]
                if not isinstance(value, typ) or isinstance(value, bool) or (typ is int and value < 1):
                    raise ConfigError(f"{where}: {key} = {value!r}: expected "
                                      f"{'a positive integer' if typ is int else 'a string'}")
                settings[key] = value
            elif isinstance(value, dict) and key in experiment_names:
                overlays[key] = value
            else:
                raise ConfigError(f"{where}: {key!r} is neither an experiment ({', '.join(experiment_names)}) "
                                  f"nor a setting ({', '.join(_SETTINGS)})")
        found[name] = Profile(name, overlays=overlays, **settings)
    return found


def pick(profiles: dict[str, Profile], name: str, source: str) -> Profile:
    if name not in profiles:
        raise ConfigError(f"--profile {name!r}: {source} has no such profile; choose one of {', '.join(profiles)}")
    return profiles[name]
