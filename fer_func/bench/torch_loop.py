"""The plain ``torch.nn`` + ``torch.optim`` loop a notebook would write, as the end-to-end benchmark's baseline.

    for each variant, one after another:
        reference nn.Module with the population's initial weights, a torch.optim optimizer,
        a torch.optim.lr_scheduler for cosine/step/plateau
        for each epoch: batches in the population's data order -> augment -> forward/backward/step
                        -> evaluate on val -> scheduler -> keep the best weights
        the best weights evaluated on test

It trains what :class:`~fer_func.population.Population` trains, not something similar: the same
initial weights and data order (both come from the variant's seed), the same batch size, epochs,
augmentation (fer_func's augment function called eagerly, with the keys the population draws for
it), class weighting and schedules. Dropout and BatchNorm are torch's own. Only the engine differs.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from fer_func import prng
from fer_func.config import OptimizerConfig, ScheduleConfig, VariantConfig
from fer_func.data.augment import augment, cutmix, mixup
from fer_func.models import NUM_CLASSES, build_from
from fer_func.optim.schedules import PLATEAU_EPS
from fer_func.population import sample_mean_class_weights
from fer_func.population.step import DATA_STREAM, INIT_STREAM, MEAN, NOISE_STREAM, STD

EVAL_CHUNK = 512  # images per evaluation forward pass, as the population's


def initial_module(v: VariantConfig, device, dtype=torch.float32) -> torch.nn.Module:
    """The variant's reference module holding exactly the weights the population starts it from."""
    model = build_from(v.model)
    params, state = model.init(prng.fold_in(prng.key(v.seed), INIT_STREAM))
    net = model.reference()
    net.load_state_dict(model.to_state_dict(params, state))
    return net.to(device=device, dtype=dtype)


def make_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """torch.optim's class for ``cfg.name`` with every hyperparameter the config holds."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening,
                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                   momentum=cfg.momentum, centered=cfg.centered)
    raise ValueError(f"optimizer.name = {cfg.name!r}: the torch loop knows sgd, adam, adamw and rmsprop")


def make_scheduler(opt, cfg: ScheduleConfig, epochs: int, updates_per_epoch: int):
    """The lr_scheduler for ``cfg`` (None for constant); ``unit="step"`` schedulers step after every update."""
    per_step = cfg.unit == "step"
    if cfg.name == "cosine":
        t_max = cfg.t_max or (epochs * updates_per_epoch if per_step else epochs)
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=cfg.eta_min)
    if cfg.name == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=cfg.mode, factor=cfg.factor, patience=cfg.patience, threshold=cfg.threshold,
            threshold_mode=cfg.threshold_mode, cooldown=cfg.cooldown, min_lr=cfg.min_lr, eps=PLATEAU_EPS)
    return None


def _inputs(v: VariantConfig, noise_key, step: int, x, y):
    """Augmented images and (hard or soft) targets, drawn from the keys the population's step uses."""
    a = v.augment
    if not a.enabled:  # no key drawn at all: eager key derivation costs a few ms a step
        return x, y
    aug_key, _, mix_key = prng.split(prng.fold_in(noise_key, step), 3).unbind(0)  # the middle one keys dropout
    x = augment(aug_key, x, a)
    if a.mixup == 0 and a.cutmix == 0:
        return x, y
    target = F.one_hot(y, NUM_CLASSES).to(x.dtype)
    k_mix, k_cut = prng.split(mix_key).unbind(0)
    for fn, k, alpha in ((mixup, k_mix, a.mixup), (cutmix, k_cut, a.cutmix)):
        if alpha > 0:
            x, target = fn(k, x, target, alpha)
    return x, target


@torch.no_grad()
def evaluate(net, images, labels, dtype) -> tuple[float, float]:
    """(mean loss, accuracy) of ``net`` on one split, in chunks; one host sync at the end."""
    net.eval()
    loss, correct = 0.0, 0
    for s in range(0, labels.shape[0], EVAL_CHUNK):
        x = (images[s:s + EVAL_CHUNK].unsqueeze(1).to(dtype) / 255.0 - MEAN) / STD  # (B, 1, 48, 48)
        y = labels[s:s + EVAL_CHUNK]
        logits = net(x)
        loss = loss + F.cross_entropy(logits, y, reduction="sum")
        correct = correct + (logits.argmax(-1) == y).sum()
    n = labels.shape[0]
    return float(loss) / n, int(correct) / n


def _finite(net) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in net.state_dict().values() if t.is_floating_point())


def train_variant(v: VariantConfig, data, device, dtype=torch.float32) -> dict:
    """Train one variant the notebook way; returns its accuracies and where the time went."""
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    # fer_func's eager init (a counter-based cipher) is slower than torch's own; a notebook would not
    # pay it, so it is timed apart (init_s) and left out of the loop's wall time.
    t_init = time.perf_counter()
    net = initial_module(v, device, dtype)
    t_start = time.perf_counter()
    x_train, y_train = data.split("train")
    n, batch = int(y_train.shape[0]), v.batch_size
    class_weight = sample_mean_class_weights(y_train).to(device=device, dtype=dtype)
    opt = make_optimizer(net.parameters(), v.optimizer)
    updates = n // batch  # the last partial batch is dropped, as the population does
    sched = make_scheduler(opt, v.schedule, v.epochs, updates)
    per_step = sched is not None and v.schedule.unit == "step" and v.schedule.name != "plateau"
    root = prng.key(v.seed).to(device)
    data_key, noise_key = prng.fold_in(root, DATA_STREAM), prng.fold_in(root, NOISE_STREAM)

    best = {"val_acc": -1.0, "epoch": -1, "state": None}
    train_s = eval_s = 0.0
    step = 0
    for epoch in range(v.epochs):
        t0 = time.perf_counter()
        net.train()
        perm = prng.permutation(prng.fold_in(data_key, epoch), n)  # the population's epoch order
        for b in range(updates):
            idx = perm[b * batch:(b + 1) * batch]
            x, y = x_train[idx].unsqueeze(1).to(dtype) / 255.0, y_train[idx]  # (B, 1, 48, 48) in [0, 1]
            x, target = _inputs(v, noise_key, step, x, y)
            nll = F.cross_entropy(net((x - MEAN) / STD), target, reduction="none")
            if v.class_weighted:  # per-sample weights of mean 1 over the training set, as the population's
                nll = nll * (target @ class_weight if target.ndim == 2 else class_weight[y])
            loss = nll.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if per_step:
                sched.step()
            step += 1
        sync()
        t1 = time.perf_counter()
        train_s += t1 - t0
        val_loss, val_acc = evaluate(net, *data.split("val"), dtype)
        if v.schedule.name == "plateau":  # watches val accuracy in mode "max", val loss in mode "min"
            sched.step(val_acc if v.schedule.mode == "max" else val_loss)
        elif sched is not None and not per_step:
            sched.step()
        if val_acc > best["val_acc"] and _finite(net):  # a diverged net never becomes the best
            best = {"val_acc": val_acc, "epoch": epoch,
                    "state": {k: t.detach().clone() for k, t in net.state_dict().items()}}
        eval_s += time.perf_counter() - t1
    t2 = time.perf_counter()
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    test_acc = evaluate(net, *data.split("test"), dtype)[1]
    eval_s += time.perf_counter() - t2
    return {"best_val": best["val_acc"], "best_epoch": best["epoch"], "test_acc": test_acc, "epochs": v.epochs,
            "steps": step, "samples_per_step": batch, "train_s": train_s, "eval_s": eval_s,
            "init_s": t_start - t_init, "wall_s": time.perf_counter() - t_start}
