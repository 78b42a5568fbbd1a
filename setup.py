"""Only a build hook; the project's metadata is pyproject.toml.

experiments.toml has one source, the repository's top level, where a user of a checkout reads and
edits it. A wheel has no top level, so the build copies it into the package as
fer_func/experiments.toml (never committed; fer_func/study/options.py picks whichever copy applies).
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EXPERIMENTS = Path(__file__).resolve().parent / "experiments.toml"


class BuildPy(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install runs from the checkout and reads its copy
            return
        if not EXPERIMENTS.is_file():
            raise FileNotFoundError(f"{EXPERIMENTS}: the build ships it as fer_func/experiments.toml; "
                                    f"build from a checkout or an sdist that has it (MANIFEST.in)")
        self.copy_file(str(EXPERIMENTS), str(Path(self.build_lib) / "fer_func" / "experiments.toml"))


setup(cmdclass={"build_py": BuildPy})
