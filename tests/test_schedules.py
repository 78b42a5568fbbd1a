"""fer_func.optim.schedules vs torch.optim.lr_scheduler, alone, as a mixed-kind vmapped stack, and compiled.

Each schedule runs EPOCHS epochs of SPE optimizer steps; the lr used by every step is compared in
float64 with ``assert_close`` defaults, and for ReduceLROnPlateau also ``best``, ``num_bad_epochs`` and
``cooldown_counter`` after every epoch, over metric sequences with ties, plateaus, jumps and a NaN.
"""
import math

import pytest
import torch
from torch.func import vmap

from fer_func import tree
from fer_func.config import ScheduleConfig
from fer_func.optim import schedules

F64 = torch.float64
EPOCHS, SPE, BASE_LR = 60, 3, 0.1

CONFIGS = [
    ScheduleConfig("constant"),
    ScheduleConfig("cosine"),                                        # T_max = whole run, per epoch
    ScheduleConfig("cosine", t_max=15, eta_min=1e-3),                # periodic past T_max, like torch
    ScheduleConfig("cosine", unit="step"),                           # T_max = EPOCHS * SPE steps
    ScheduleConfig("cosine", unit="step", t_max=25, eta_min=0.01),
    ScheduleConfig("step", step_size=7, gamma=0.5),
    ScheduleConfig("step", unit="step", step_size=20, gamma=0.9),
    ScheduleConfig("plateau"),                                       # max, rel, patience 2
    ScheduleConfig("plateau", mode="min", patience=0, cooldown=2, factor=0.5, min_lr=1e-4),
    ScheduleConfig("plateau", mode="min", threshold_mode="abs", threshold=0.05, patience=1, cooldown=1,
                   factor=0.3, min_lr=0.01),
    ScheduleConfig("plateau", mode="max", threshold_mode="abs", threshold=0.02, patience=3, cooldown=3,
                   factor=0.5, min_lr=1e-3),
    ScheduleConfig("plateau", mode="max", threshold=0.1, patience=1, factor=0.5, min_lr=0.05),
    ScheduleConfig("plateau", mode="min", threshold=0.0, patience=0, factor=0.9),  # reduces on every tie
]


def metrics(cfg, seed):
    """A validation curve for ``cfg.mode``: noisy, saturating, rounded to 2 decimals (ties), one jump, one NaN."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(EPOCHS, dtype=F64)
    acc = 0.7 * (1 - torch.exp(-t / 8)) + 0.03 * torch.randn(EPOCHS, generator=g, dtype=F64)
    acc = torch.round(acc * 100) / 100
    acc[30] += 0.2   # a sudden improvement
    acc[45] = math.nan
    return acc if cfg.mode == "max" else 2.0 - acc


def torch_reference(cfg, metric):
    """Per-step lrs and per-epoch plateau internals from torch.optim.lr_scheduler."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=F64))
    opt = torch.optim.SGD([p], lr=BASE_LR)
    per_step = cfg.unit == "step"
    t_max = cfg.t_max or (EPOCHS * SPE if per_step else EPOCHS)
    S = torch.optim.lr_scheduler
    sched = {"constant": lambda: None,
             "cosine": lambda: S.CosineAnnealingLR(opt, T_max=t_max, eta_min=cfg.eta_min),
             "step": lambda: S.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma),
             "plateau": lambda: S.ReduceLROnPlateau(opt, mode=cfg.mode, factor=cfg.factor, patience=cfg.patience,
                                                    threshold=cfg.threshold, threshold_mode=cfg.threshold_mode,
                                                    cooldown=cfg.cooldown, min_lr=cfg.min_lr)}[cfg.name]()
    lrs, internals = [], []
    for e in range(EPOCHS):
        for _ in range(SPE):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()  # no grads: a no-op that keeps the scheduler's call-order check quiet
            if per_step and cfg.name in ("cosine", "step"):
                sched.step()
        if cfg.name == "plateau":
            sched.step(float(metric[e]))
            internals.append((sched.best, sched.num_bad_epochs, sched.cooldown_counter))
        elif not per_step and sched is not None:
            sched.step()
    return torch.tensor(lrs, dtype=F64), internals


def check_internals(state, ref, cfg, epoch, where=""):
    best, bad, counter = ref
    got = (state["best"].item(), state["num_bad_epochs"].item(), state["cooldown_counter"].item())
    assert got == (best, bad, counter), f"{where} {cfg} epoch {epoch}: (best, bad, cooldown) {got} != torch {ref}"


@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=[f"{c.name}-{c.unit}-{i}" for i, c in enumerate(CONFIGS)])
def test_matches_torch_lr_scheduler(i):
    cfg = CONFIGS[i]
    metric = metrics(cfg, seed=i)
    ref_lrs, ref_internals = torch_reference(cfg, metric)
    state = schedules.init(cfg, BASE_LR, EPOCHS, SPE, F64, "cpu")
    lrs = []
    for e in range(EPOCHS):
        for _ in range(SPE):
            lrs.append(schedules.lr(state))
            state = schedules.after_step(state)
        state = schedules.after_epoch(state, metric[e])
        if cfg.name == "plateau":
            check_internals(state, ref_internals[e], cfg, e)
    torch.testing.assert_close(torch.stack(lrs), ref_lrs)
    if cfg.name == "plateau":  # the sequences really exercise the reductions
        assert len(set(ref_lrs.tolist())) >= 2, f"{cfg}: the metric sequence never reduced the lr"


def epoch(state, metric):
    """One epoch of the engine's calls: lr for each of SPE steps, then the epoch hook."""
    lrs = []
    for _ in range(SPE):
        lrs.append(schedules.lr(state))
        state = schedules.after_step(state)
    return schedules.after_epoch(state, metric), torch.stack(lrs)


@pytest.mark.parametrize("compiled", [False, True], ids=["vmap", "compiled-vmap"])
def test_mixed_kinds_stack_into_one_vmapped_population(compiled):
    torch._dynamo.reset()
    refs = [torch_reference(c, metrics(c, seed=i)) for i, c in enumerate(CONFIGS)]
    metric = torch.stack([metrics(c, seed=i) for i, c in enumerate(CONFIGS)], dim=1)  # (EPOCHS, K)
    state = tree.stack([schedules.init(c, BASE_LR, EPOCHS, SPE, F64, "cpu") for c in CONFIGS])
    fn = vmap(epoch)
    if compiled:
        fn = torch.compile(fn, fullgraph=True)
    eager_state, lrs = state, []
    with torch._dynamo.config.patch(error_on_recompile=True):
        for e in range(EPOCHS):
            state, step_lrs = fn(state, metric[e])  # step_lrs: (K, SPE)
            lrs.append(step_lrs)
            if compiled:
                eager_state, eager_lrs = vmap(epoch)(eager_state, metric[e])
                torch.testing.assert_close(step_lrs, eager_lrs)
                torch.testing.assert_close(state, eager_state)
            for k, c in enumerate(CONFIGS):
                if c.name == "plateau":
                    check_internals(tree.index(state, k), refs[k][1][e], c, e, "population")
    lrs = torch.cat(lrs, dim=1)  # (K, EPOCHS * SPE)
    for k, (c, (ref_lrs, _)) in enumerate(zip(CONFIGS, refs)):
        torch.testing.assert_close(lrs[k], ref_lrs, msg=lambda m: f"member {k} {c}: {m}")


def test_state_dtype_and_device_follow_the_arguments():
    state = schedules.init(ScheduleConfig("cosine"), 0.5, 10, 4, torch.float32, "cpu")
    assert schedules.lr(state).dtype == torch.float32 and schedules.lr(state).item() == 0.5
    assert state["t"].dtype == torch.int64


@pytest.mark.parametrize("args,message", [
    ((ScheduleConfig(), 0.1, 0, 5), "total_epochs = 0"),
    ((ScheduleConfig(), 0.1, 10, 0), "steps_per_epoch = 0"),
    ((ScheduleConfig(), 0.1, 10, 2.5), "steps_per_epoch = 2.5"),
])
def test_impossible_values_fail_at_init(args, message):
    with pytest.raises(ValueError, match=message):
        schedules.init(*args, dtype=F64)


def test_init_rejects_a_non_config():
    with pytest.raises(TypeError, match="expects a ScheduleConfig"):
        schedules.init({"name": "cosine"}, 0.1, 10, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mixed_stack_on_cuda_matches_torch():
    refs = [torch_reference(c, metrics(c, seed=i))[0] for i, c in enumerate(CONFIGS)]
    metric = torch.stack([metrics(c, seed=i) for i, c in enumerate(CONFIGS)], dim=1).cuda()
    state = tree.stack([schedules.init(c, BASE_LR, EPOCHS, SPE, F64, "cuda") for c in CONFIGS])
    lrs = []
    for e in range(EPOCHS):
        state, step_lrs = vmap(epoch)(state, metric[e])
        lrs.append(step_lrs)
    torch.testing.assert_close(torch.cat(lrs, dim=1).cpu(), torch.stack(refs))
