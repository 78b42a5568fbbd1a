"""The population engine: K hyperparameter variants of one architecture, one vmapped, compiled step."""
from fer_func.population.evaluate import per_class
from fer_func.population.plan import Plan, make_plan
from fer_func.population.population import Population, sample_mean_class_weights

__all__ = ["Population", "Plan", "make_plan", "per_class", "sample_mean_class_weights"]
