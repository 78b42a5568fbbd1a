"""Compile machinery, below the population that uses it.

``program.py`` torch.compiles a function as a program with a dynamo cache of its own
(``compile_program``, ``compile_options``, ``own_code``); ``precompiled.py`` saves an inductor program
ahead of time and loads it in later processes; ``cache.py`` keeps one program per static structure for
the whole process. Nothing here imports ``fer_func.population``: the population builds its step and
eval programs (population/programs.py) and hands the builders to :func:`cached`.
"""
from fer_func.compile.cache import cached
from fer_func.compile.precompiled import Precompiled
from fer_func.compile.program import compile_options, compile_program, own_code

__all__ = ["Precompiled", "cached", "compile_options", "compile_program", "own_code"]
