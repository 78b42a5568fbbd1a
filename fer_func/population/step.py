"""The training micro-step of ONE variant, as a pure function; the population vmaps and compiles it.

    carry, hp, images, labels, class_weight, perm, j  ->  carry

``carry`` is everything that changes (params, BN state, optimizer and schedule state, the
variant's noise key and counters, epoch metric sums); ``hp`` holds per-variant constants
(tensors); ``images``/``labels`` are the whole training split on the device, shared by all
variants; ``perm`` is the variant's data order for this epoch and ``j`` the micro-step index.
No value is ever read back to Python here and no Python branch depends on a tensor, so the
function traces to one graph and never recompiles across hyperparameters, steps or epochs.

Divergence: a micro-step whose loss or gradients are not finite marks the variant diverged and
is not applied; from then on nothing of it changes. Every decision is a per-variant
``torch.where``, so the other variants compute exactly what they would without it. The updated
parameters are deliberately not checked as well: that check is a reduction over every new
parameter, which inductor can only satisfy by computing the optimizer update twice (or storing
it and selecting in a second pass), a large share of a small model's update kernel. An
update that overflows shows up one step later, as a non-finite loss, and freezes the variant there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import grad_and_value

from fer_func import optim, prng, tree
from fer_func.data.augment import augment, cutmix, mixup
from fer_func.optim import schedules
from fer_func.optim.flat import Ravel, layout
from fer_func.population.plan import Plan
from fer_func.population.precision import autocast

MEAN, STD = 0.5, 0.25  # fixed input normalisation: x in [0, 1] -> roughly zero mean, unit scale

# Streams derived from a variant's seed: same seed -> same init and data order (common random numbers).
INIT_STREAM, DATA_STREAM, NOISE_STREAM = 0, 1, 2


def all_finite(t) -> torch.Tensor:
    return torch.stack([torch.isfinite(x).all() for x in tree.leaves(t)]).all()


def gather_batch(images, labels, perm, j, micro_batch: int, dtype: torch.dtype):
    """Micro-batch ``j`` of the epoch's order ``perm``: float (m, 1, 48, 48) in [0, 1], labels (m,)."""
    n = perm.shape[-1]
    pos = (j * micro_batch + torch.arange(micro_batch, device=perm.device)) % n  # idle steps wrap, are masked
    idx = perm[pos]
    return images[idx].unsqueeze(1).to(dtype) / 255.0, labels[idx]


def normalize(x, mean: float, std: float):
    return (x - mean) / std


def make_train_step(plan: Plan, update, mean: float, std: float, dtype: torch.dtype, precision: str = "fp32"):
    """``update`` is the (shared) optimizer update; hyperparameters come from each variant's state.

    ``precision="bf16"`` runs the model's forward (and so its backward) under bf16 autocast; the
    loss, the gradients (of the float32 params), the optimizer and the BatchNorm state stay float32.
    """
    model, m = plan.model, plan.micro_batch

    mixing = plan.augment is not None and (plan.augment.mixup > 0 or plan.augment.cutmix > 0)

    def loss_fn(params, model_state, x, target, weight, key, dropout):
        with autocast(precision, x.device.type):
            logits, new_state = model.apply(params, model_state, x, key=key, train=True, dropout=dropout)
        logits = logits.to(dtype)
        new_state = tree.tree_map(lambda new, old: new.to(old.dtype), new_state, model_state)
        # Per-sample weights normalised to mean 1 over the training set keep the loss a plain mean,
        # so summing micro-batch gradients is exact for class-weighted losses too.
        if mixing:  # soft targets; only then, since 0 * log(0) would turn a hard target's -inf into NaN
            nll = -(target * F.log_softmax(logits, -1)).sum(-1)
        else:
            nll = F.cross_entropy(logits, target, reduction="none")
        return (weight * nll).mean(), (logits, new_state)

    def mix(key, x, y, hp_aug):
        """MixUp then CutMix (each when its alpha > 0) on augmenting variants: soft targets (m, 7)."""
        target = F.one_hot(y, 7).to(x.dtype)
        k_mix, k_cut = prng.split(key).unbind(0)
        for fn, k, alpha in ((mixup, k_mix, plan.augment.mixup), (cutmix, k_cut, plan.augment.cutmix)):
            if alpha > 0:
                x2, t2 = fn(k, x, target, alpha)
                x, target = torch.where(hp_aug, x2, x), torch.where(hp_aug, t2, target)
        return x, target

    def step(carry, hp, images, labels, class_weight, perm, j):
        active = (j < hp["active_steps"]) & ~carry["diverged"]
        x, y = gather_batch(images, labels, perm, j, m, dtype)
        aug_key, drop_key, mix_key = prng.split(prng.fold_in(carry["noise_key"], carry["step"]), 3).unbind(0)
        if plan.augment is not None:
            x = torch.where(hp["augment"], augment(aug_key, x, plan.augment), x)
        weight = torch.where(hp["class_weighted"], class_weight[y], torch.ones_like(class_weight[y]))
        target = y
        if mixing:
            x, target = mix(mix_key, x, y, hp["augment"])
            weight = torch.where(hp["class_weighted"], target @ class_weight, torch.ones_like(weight))
        x = normalize(x, mean, std)

        params = carry["params"]
        grads, (loss, (logits, new_model_state)) = grad_and_value(loss_fn, has_aux=True)(
            params, carry["model_state"], x, target, weight, drop_key, hp["dropout"])

        # From here to the commit the params, gradients and optimizer buffers are each one flat buffer
        # for models of many tensors (optim.flat.layout): the same leafwise arithmetic, a fraction of
        # the compiled code. The carry keeps its per-tensor layout, but for the gradient accumulator,
        # which only this step reads and which is always flat.
        lay = layout(params)
        step_grads = lay.flat(grads)
        if plan.accumulate:  # the accumulator lives flat in the carry: one add, one select, not one per tensor
            flat = isinstance(lay, Ravel)
            ravel = lay if flat else Ravel(params)
            acc = tree.tree_map(torch.add, carry["grad_acc"], step_grads if flat else ravel.flat(grads))
            micro = carry["micro"] + 1
            is_update = micro == hp["n_micro"]
            avg = tree.tree_map(lambda a: a / hp["n_micro"].to(a.dtype), acc)
            g = avg if flat else ravel.unflat(avg, params)
        else:
            is_update = torch.ones((), dtype=torch.bool, device=loss.device)
            g = step_grads

        flat_params, old_opt_state = lay.flat(params), lay.flat(carry["opt_state"])
        # The schedule state is the one holder of the lr (state.py): lent to this update, not carried.
        opt_state = optim.add_hparams(old_opt_state, lr=schedules.lr(carry["sched"]))
        updates, new_opt_state = update(g, opt_state, flat_params)
        new_opt_state = optim.without_hparams(new_opt_state, "lr")
        new_params = optim.apply_updates(flat_params, updates)

        finite = torch.isfinite(loss) & all_finite(step_grads)
        ok = active & finite
        commit = ok & is_update
        out = dict(carry)
        out["params"] = lay.unflat(tree.where(commit, new_params, flat_params), params)
        out["opt_state"] = lay.unflat(tree.where(commit, new_opt_state, old_opt_state), carry["opt_state"])
        out["sched"] = tree.where(commit, schedules.after_step(carry["sched"]), carry["sched"])
        out["model_state"] = tree.where(ok, new_model_state, carry["model_state"])
        if plan.accumulate:
            zeros = tree.tree_map(torch.zeros_like, acc)
            out["grad_acc"] = tree.where(ok, tree.where(is_update, zeros, acc), carry["grad_acc"])
            out["micro"] = torch.where(ok, torch.where(is_update, torch.zeros_like(micro), micro), carry["micro"])
        newly_diverged = active & ~finite
        out["diverged"] = carry["diverged"] | newly_diverged
        out["diverged_step"] = torch.where(newly_diverged, carry["step"], carry["diverged_step"])
        # The variant's own micro-step count: it keys dropout/augmentation, so a variant idling at the
        # end of a shorter epoch (batch-size populations) or frozen by divergence does not advance it,
        # and draws what a solo run with the same micro-batch draws.
        out["step"] = carry["step"] + active.to(carry["step"].dtype)

        n_ok = ok.to(loss.dtype)
        correct = (logits.argmax(-1) == y).sum().to(loss.dtype)
        mt = carry["metrics"]
        out["metrics"] = {"loss_sum": mt["loss_sum"] + torch.where(ok, loss.detach() * m, 0.0),
                          "correct": mt["correct"] + n_ok * correct,
                          "count": mt["count"] + n_ok * m}
        return out

    return step
