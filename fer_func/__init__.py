"""fer-func: pure-function models, explicit keys and functional optimizers for populations of FER2013 classifiers."""
from fer_func import prng, tree

# The one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic]).
__version__ = "0.1.0"
__all__ = ["prng", "tree"]
