"""fer-func: pure-function models, explicit keys and functional optimizers for populations of FER2013 classifiers."""
from fer_func import prng, tree

__all__ = ["prng", "tree"]
