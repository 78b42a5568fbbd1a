"""The population's step and eval programs: built from the step and eval functions, vmapped over the
K axis in ``mode="vmap"``, compiled, and cached by static structure (fer_func/compile/cache.py).

Populations that differ only in numbers (learning rates, seeds, schedules, batch sizes with the same
micro-batch) get the very same compiled programs back, so building a new grid never recompiles.
The builders live here, beside the step and eval they build, and the generic keyed cache lives in
compile/: compile/ stays below population/ and never imports it.
"""
from __future__ import annotations

import torch

from fer_func import tree
from fer_func.compile import cached, compile_options, compile_program
from fer_func.population.evaluate import make_eval_chunk
from fer_func.population.plan import Plan
from fer_func.population.step import MEAN, STD, make_train_step


def programs(model, micro_batch, accumulate, augment, varying_dropout, rules, dtype, mode, compile, eval_chunk,
             precision, cuda_graphs, update, device_type):
    """The (compiled) step and eval functions, cached by static structure only.

    ``update`` is not part of the key: it reads every value from the state, and optimizers with equal
    ``rules`` run the same code.
    """
    key = (model, micro_batch, accumulate, augment, varying_dropout, rules, dtype, mode, compile, eval_chunk, precision,
           cuda_graphs, device_type)
    return cached(key, lambda: build_programs(model, micro_batch, accumulate, augment, varying_dropout, dtype, mode,
                                              compile, eval_chunk, precision, cuda_graphs, update, device_type, key))


def fold_eval_program(model, dtype, mode, compile, eval_chunk, precision, cuda_graphs, device_type):
    """The eval program with per-variant images, labels and sizes (a cross-validation population's
    folds), cached like :func:`programs`; in loop mode the plain per-variant eval serves."""
    key = ("folds", model, dtype, mode, compile, eval_chunk, precision, cuda_graphs, device_type)

    def build():
        plan = Plan(model=model, micro_batch=1, steps_per_epoch=0, active_steps=(), accumulate=False, augment=None,
                    epochs=0, num_train=0)
        evalc = make_eval_chunk(plan, MEAN, STD, dtype, eval_chunk, precision)
        if mode == "vmap":
            evalc = torch.func.vmap(evalc, in_dims=(0, 0, 0, 0, None, 0))
        if compile:
            evalc = compile_program(evalc, key, **compile_options(compile, cuda_graphs, device_type))
        return evalc

    return cached(key, build)


def build_programs(model, micro_batch, accumulate, augment, varying_dropout, dtype, mode, compile, eval_chunk,
                   precision, cuda_graphs, update, device_type, key=None):
    plan = Plan(model=model, micro_batch=micro_batch, steps_per_epoch=0, active_steps=(), accumulate=accumulate,
                augment=augment, epochs=0, num_train=0, varying_dropout=varying_dropout)
    step = make_train_step(plan, update, MEAN, STD, dtype, precision)
    evalc = make_eval_chunk(plan, MEAN, STD, dtype, eval_chunk, precision)
    if mode == "vmap":
        batched = torch.func.vmap(step, in_dims=(0, 0, None, None, None, 0, None))

        def step(*args):
            # The step computes params and optimizer buffers as one flat buffer per variant, so under
            # vmap each returned tensor is a strided slice of a (K, N) buffer; a contiguous carry keeps
            # the next call's inputs in the layout the program was compiled for (no recompile).
            return tree.tree_map(torch.Tensor.contiguous, batched(*args))

        evalc = torch.func.vmap(evalc, in_dims=(0, 0, None, None, None, None))
    if compile:
        options = compile_options(compile, cuda_graphs, device_type)
        step, evalc = (compile_program(step, key and ("step", *key), **options),
                       compile_program(evalc, key and ("eval", *key), **options))
    return step, evalc
