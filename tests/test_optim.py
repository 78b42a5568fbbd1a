"""fer_func.optim vs torch.optim: every rule over a grid, eager, vmapped, compiled and mixed by select().

Each case runs STEPS updates in float64 with gradients whose magnitudes span 1e-3..1e3 (and a param
with all-zero gradients on some steps), and compares params and optimizer buffers with
``torch.testing.assert_close`` defaults after every step. Scheduled cases change the lr every step
(``with_hparams`` here, ``param_group["lr"]`` there), as the engine's scheduler does.
"""
import math

import pytest
import torch
from torch.func import vmap

from fer_func import tree
from fer_func.config import OptimizerConfig
from fer_func.optim import (add_hparams, adam, adamw, apply_updates, from_config, from_configs, get_hparam, hparam_names,
                            rmsprop, select, sgd, with_hparams, without_hparams)
from fer_func.optim.flat import Ravel
from fer_func.optim.select import active_state

F64 = torch.float64
STEPS = 60
SHAPES = {"w": (4, 3), "b": (3,), "v": (2, 2, 2)}

# (rule, our kwargs, scheduled lr?). Rule = (torch class, static structure); kwargs are torch.optim's.
CASES = [
    ("sgd", dict(lr=0.1), False),
    ("sgd", dict(lr=0.01, momentum=0.9), True),
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.5, weight_decay=1e-2), False),
    ("sgd", dict(lr=0.03, momentum=0.0, dampening=0.3, weight_decay=0.05), True),  # torch ignores dampening
    ("sgd", dict(lr=1e-3, momentum=0.99, dampening=0.1), False),
    ("sgd_nesterov", dict(lr=0.01, momentum=0.9, nesterov=True), False),
    ("sgd_nesterov", dict(lr=0.02, momentum=0.5, nesterov=True, weight_decay=0.1), True),
    ("adam", dict(lr=1e-3), False),
    ("adam", dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6, weight_decay=1e-2), True),
    ("adam", dict(lr=0.1, betas=(0.0, 0.99), eps=1e-3), False),
    ("adam", dict(lr=3e-4, betas=(0.95, 0.9999), weight_decay=0.5), False),
    ("adamw", dict(lr=1e-3), False),
    ("adamw", dict(lr=1e-2, betas=(0.5, 0.9), eps=1e-6, weight_decay=0.1), True),
    ("adamw", dict(lr=0.1, betas=(0.0, 0.99), eps=1e-3, weight_decay=0.0), False),
    ("rmsprop", dict(lr=1e-2), False),
    ("rmsprop", dict(lr=1e-3, alpha=0.9, eps=1e-6, weight_decay=1e-2, momentum=0.9), True),
    ("rmsprop", dict(lr=5e-3, alpha=0.5, momentum=0.5), False),
    ("rmsprop_centered", dict(lr=1e-2, centered=True), False),
    ("rmsprop_centered", dict(lr=5e-3, alpha=0.9, eps=1e-4, weight_decay=0.1, momentum=0.5, centered=True), True),
]
RULES = {"sgd": (sgd, torch.optim.SGD, ["momentum_buffer"]),
         "sgd_nesterov": (sgd, torch.optim.SGD, ["momentum_buffer"]),
         "adam": (adam, torch.optim.Adam, ["exp_avg", "exp_avg_sq"]),
         "adamw": (adamw, torch.optim.AdamW, ["exp_avg", "exp_avg_sq"]),
         "rmsprop": (rmsprop, torch.optim.RMSprop, ["square_avg", "momentum_buffer"]),
         "rmsprop_centered": (rmsprop, torch.optim.RMSprop, ["square_avg", "grad_avg", "momentum_buffer"])}


def _ids(cases):
    return [f"{r}-{i}" for i, (r, _, _) in enumerate(cases)]


def make_params(seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g, dtype=F64) for k, s in SHAPES.items()}


def make_grads(seed, steps=STEPS):
    """Per-step grads, magnitudes log-uniform over 1e-3..1e3 per element; "b" is all zero every 4th step."""
    g = torch.Generator().manual_seed(1000 + seed)
    out = []
    for s in range(steps):
        d = {k: torch.randn(shp, generator=g, dtype=F64) * 10 ** (6 * torch.rand(shp, generator=g, dtype=F64) - 3)
             for k, shp in SHAPES.items()}
        if s % 4 == 1:
            d["b"] = torch.zeros_like(d["b"])
        out.append(d)
    return out


def lr_schedule(lr, scheduled, steps=STEPS):
    return [lr * (0.55 + 0.45 * math.cos(0.37 * s)) if scheduled else lr for s in range(steps)]


def torch_run(rule, kwargs, params, grads, lrs):
    """The reference trajectory: per step, (params, {buffer name: {param name: tensor}})."""
    _, cls, names = RULES[rule]
    ps = {k: torch.nn.Parameter(v.clone()) for k, v in params.items()}
    opt = cls(list(ps.values()), foreach=False, **kwargs)
    traj = []
    for g, lr in zip(grads, lrs):
        opt.param_groups[0]["lr"] = lr
        for k, p in ps.items():
            p.grad = g[k].clone()
        opt.step()
        bufs = {n: {k: opt.state[p][n].clone() for k, p in ps.items() if n in opt.state[p]} for n in names}
        traj.append(({k: p.detach().clone() for k, p in ps.items()}, bufs))
    return traj


def find(state, name, opt=None):
    """The ``{param: tensor}`` buffer called ``name`` in an optimizer state (a select state: the active rule's,
    rebuilt from the shared buffers by ``active_state``, which needs the select optimizer ``opt``)."""
    if isinstance(state, dict) and "choices" in state:
        return find(active_state(opt, state), name)
    if isinstance(state, dict):
        if name in state and isinstance(state[name], dict):
            return state[name]
        for v in state.values():
            hit = find(v, name)
            if hit is not None:
                return hit
    return None


def check_step(params, state, ref, step, where="", opt=None):
    ref_params, ref_bufs = ref
    torch.testing.assert_close(params, ref_params, msg=lambda m: f"{where} params differ at step {step}: {m}")
    for name, buf in ref_bufs.items():
        if buf:  # SGD without momentum keeps no buffer
            torch.testing.assert_close(find(state, name, opt), buf, msg=lambda m: f"{where} {name} differs at step {step}: {m}")


@pytest.mark.parametrize("rule,kwargs,scheduled", CASES, ids=_ids(CASES))
def test_matches_torch_optim(rule, kwargs, scheduled):
    make = RULES[rule][0]
    params, grads, lrs = make_params(0), make_grads(0), lr_schedule(kwargs["lr"], scheduled)
    ref = torch_run(rule, kwargs, params, grads, lrs)
    opt = make(**kwargs)
    state = opt.init(params)
    layout = paths(state)
    for s in range(STEPS):
        state = with_hparams(state, lr=lrs[s])
        updates, state = opt.update(grads[s], state, params)
        params = apply_updates(params, updates)
        check_step(params, state, ref[s], s)
    assert paths(state) == layout  # same keys in the same order: a compiled update never re-guards


def paths(state, prefix=""):
    """Every leaf's key path in order (dict order is part of the pytree spec, so it must not change)."""
    if isinstance(state, dict):
        return [p for k, v in state.items() for p in paths(v, f"{prefix}/{k}")]
    return [(prefix, str(state.dtype), tuple(state.shape))]


def population(rule):
    """All grid cases of one rule as a stacked population: (opt, params, state, grads, lrs, refs)."""
    cases = [(kw, sch) for r, kw, sch in CASES if r == rule]
    make, seeds = RULES[rule][0], range(len(cases))
    opts = [make(**kw) for kw, _ in cases]
    params = [make_params(i) for i in seeds]
    grads = [make_grads(i) for i in seeds]
    lrs = [lr_schedule(kw["lr"], sch) for kw, sch in cases]
    refs = [torch_run(rule, kw, p, g, l) for (kw, _), p, g, l in zip(cases, params, grads, lrs)]
    states = tree.stack([o.init(p) for o, p in zip(opts, params)])
    return opts[0], tree.stack(params), states, [tree.stack(list(gs)) for gs in zip(*grads)], torch.tensor(lrs, dtype=F64).T, refs


def run_population(update, params, state, grads, lrs, refs, where, opt=None):
    for s in range(STEPS):
        state = with_hparams(state, lr=lrs[s])
        updates, state = update(grads[s], state, params)
        params = apply_updates(params, updates)
        for k, ref in enumerate(refs):
            check_step(tree.index(params, k), tree.index(state, k), ref[s], s, f"{where} member {k}", opt)
    return params, state


@pytest.mark.parametrize("rule", list(RULES))
def test_vmap_population_matches_each_torch_run(rule):
    opt, params, state, grads, lrs, refs = population(rule)
    run_population(vmap(opt.update), params, state, grads, lrs, refs, f"vmap {rule}")


@pytest.mark.parametrize("rule", list(RULES))
def test_compiled_vmapped_update_equals_eager_and_torch(rule):
    """One fullgraph compile per rule; changing every hyperparameter's value must not recompile."""
    torch._dynamo.reset()
    opt, params, state, grads, lrs, refs = population(rule)
    eager = vmap(opt.update)
    compiled = torch.compile(vmap(opt.update), fullgraph=True)
    e_params, e_state = params, state
    with torch._dynamo.config.patch(error_on_recompile=True):
        for s in range(STEPS):
            state, e_state = with_hparams(state, lr=lrs[s]), with_hparams(e_state, lr=lrs[s])
            u, state = compiled(grads[s], state, params)
            eu, e_state = eager(grads[s], e_state, e_params)
            params, e_params = apply_updates(params, u), apply_updates(e_params, eu)
            torch.testing.assert_close(params, e_params)
            torch.testing.assert_close(state, e_state)
            for k, ref in enumerate(refs):
                check_step(tree.index(params, k), tree.index(state, k), ref[s], s, f"compiled {rule} member {k}")


def mixed_population():
    cfgs = [OptimizerConfig("sgd", lr=0.05, momentum=0.9, weight_decay=1e-2),
            OptimizerConfig("adam", lr=1e-2, beta1=0.5, beta2=0.9, weight_decay=1e-2),
            OptimizerConfig("rmsprop", lr=1e-2, alpha=0.9, momentum=0.5, centered=True),
            OptimizerConfig("adamw", lr=1e-3, weight_decay=0.1),
            OptimizerConfig("sgd", lr=0.01, momentum=0.9, nesterov=True),
            OptimizerConfig("adam", lr=1e-3),
            OptimizerConfig("rmsprop", lr=1e-3, weight_decay=1e-2)]
    torch_kwargs = {
        "sgd": lambda c: ("sgd_nesterov" if c.nesterov else "sgd",
                          dict(lr=c.lr, momentum=c.momentum, dampening=c.dampening, nesterov=c.nesterov, weight_decay=c.weight_decay)),
        "adam": lambda c: ("adam", dict(lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, weight_decay=c.weight_decay)),
        "adamw": lambda c: ("adamw", dict(lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps, weight_decay=c.weight_decay)),
        "rmsprop": lambda c: ("rmsprop_centered" if c.centered else "rmsprop",
                              dict(lr=c.lr, alpha=c.alpha, eps=c.eps, weight_decay=c.weight_decay, momentum=c.momentum, centered=c.centered)),
    }
    opts = from_configs(cfgs)
    seeds = range(len(cfgs))
    params, grads = [make_params(i) for i in seeds], [make_grads(i) for i in seeds]
    lrs = [lr_schedule(c.lr, scheduled=i % 2 == 0) for i, c in enumerate(cfgs)]
    refs = [torch_run(*torch_kwargs[c.name](c), p, g, l) for c, p, g, l in zip(cfgs, params, grads, lrs)]
    states = tree.stack([o.init(p) for o, p in zip(opts, params)])
    return opts[0], tree.stack(params), states, [tree.stack(list(gs)) for gs in zip(*grads)], torch.tensor(lrs, dtype=F64).T, refs


def test_select_mixed_rules_under_vmap_match_each_torch_run():
    opt, params, state, grads, lrs, refs = mixed_population()
    assert state["index"].tolist() == [0, 1, 2, 3, 4, 1, 5]  # rules in order of first appearance
    before = tree.clone(state["choices"])
    run_population(vmap(opt.update), params, state, grads, lrs, refs, "select", opt)
    # An inactive rule's own state never moves: member 0 (sgd) keeps Adam's step counter at zero.
    torch.testing.assert_close(tree.index(state["choices"]["1"]["inner"], 0), tree.index(before["1"]["inner"], 0))


def test_select_shares_buffers_across_rules():
    """Issue 11: a mixed population holds max(buffers per rule), not the sum, per variant."""
    params = {"w": torch.zeros(30, 5, dtype=F64), "b": torch.zeros(5, dtype=F64)}
    rules = [sgd(lr=0.1, momentum=0.9), adam(lr=0.1), rmsprop(lr=0.1, momentum=0.5), adamw(lr=0.1)]
    own = sum(tree.num_elements(r.init(params)) for r in rules)
    shared = tree.num_elements(select(rules, 0).init(params))
    n = tree.num_elements(params)
    # Own states: sgd 1 + adam 2 + rmsprop 2 + adamw 2 = 7 buffers; shared: 2 (plus small scalars).
    assert own - 7 * n < n and shared - 2 * n < n, (own, shared, n)
    centered = select(rules + [rmsprop(lr=0.1, momentum=0.5, centered=True)], 4).init(params)
    assert len(centered["buffers"]) == 3


def test_select_compiled_once_for_the_mixed_population():
    torch._dynamo.reset()
    opt, params, state, grads, lrs, refs = mixed_population()
    with torch._dynamo.config.patch(error_on_recompile=True):
        run_population(torch.compile(vmap(opt.update), fullgraph=True), params, state, grads, lrs, refs, "compiled select", opt)


def test_flat_layout_matches_each_torch_run():
    """optim.flat, as the population step uses it: the mixed population updated on one flat buffer
    per variant gives each member torch.optim's numbers, and unflat gives back the per-tensor
    layout (same key paths, order, dtypes and shapes, so the compiled carry's spec is unchanged)."""
    opt, params, state, grads, lrs, refs = mixed_population()

    def flat_update(g, s, p):
        ravel = Ravel(p)
        u, new = opt.update(ravel.flat(g), ravel.flat(s), ravel.flat(p))
        assert list(ravel.flat(s)["buffers"]["0"]) == ["flat"]  # the buffers really are flat inside
        return ravel.unflat(u, p), ravel.unflat(new, s)

    _, new_state = run_population(vmap(flat_update), params, state, grads, lrs, refs, "flat select", opt)
    assert paths(new_state) == paths(state)


def test_ravel_round_trip_follows_each_subtrees_key_order():
    p = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([7.0, 8.0])}
    ravel = Ravel(p)
    state = {"step": torch.tensor(3), "m": {"b": p["b"] * 2, "w": p["w"] * 2}}  # other key order
    flat = ravel.flat(state)
    assert flat["step"] is state["step"]
    torch.testing.assert_close(flat["m"]["flat"], torch.tensor([0.0, 2, 4, 6, 8, 10, 14, 16]))
    back = ravel.unflat(flat, state)
    assert list(back["m"]) == ["b", "w"]
    torch.testing.assert_close(back, state)
    with pytest.raises(ValueError, match="mix dtypes"):
        Ravel({"w": torch.zeros(2), "b": torch.zeros(2, dtype=torch.float64)})


def test_hparams_are_state_tensors_with_params_dtype():
    params = {"w": torch.zeros(2, dtype=F64)}
    state = adam(lr=0.1, betas=(0.8, 0.9)).init(params)
    assert set(state["hparams"]) == {"lr", "beta1", "beta2", "eps", "weight_decay"}
    assert all(v.dtype == F64 and v.shape == () for v in state["hparams"].values())
    assert get_hparam(state, "beta1").item() == 0.8
    new = with_hparams(state, lr=torch.tensor(0.5), beta2=0.95)
    assert (get_hparam(new, "lr").item(), get_hparam(new, "beta2").item(), get_hparam(state, "lr").item()) == (0.5, 0.95, 0.1)
    assert new["hparams"]["lr"].dtype == F64
    stacked = tree.stack([state, state])
    assert with_hparams(stacked, lr=0.3)["hparams"]["lr"].tolist() == [0.3, 0.3]  # a scalar keeps the K axis


def test_select_hparams_set_every_rule_and_get_the_active_one():
    params = {"w": torch.zeros(2, dtype=F64)}
    rules = [sgd(lr=0.1, momentum=0.9), adam(lr=0.2), rmsprop(lr=0.3, momentum=0.4)]
    state = select(rules, 1).init(params)
    assert get_hparam(state, "lr").item() == 0.2
    assert get_hparam(select(rules, 2).init(params), "momentum").item() == 0.4
    assert hparam_names(state) == {"lr", "momentum", "dampening", "weight_decay", "beta1", "beta2", "eps", "alpha"}
    new = with_hparams(state, lr=0.05)
    assert [new["choices"][k]["hparams"]["lr"].item() for k in "012"] == [0.05] * 3
    with pytest.raises(KeyError, match="unknown hyperparameter"):
        with_hparams(state, learning_rate=0.1)


def test_from_config_builds_the_named_rule():
    cfg = OptimizerConfig("rmsprop", lr=0.02, alpha=0.9, momentum=0.3, centered=True)
    state = from_config(cfg).init({"w": torch.zeros(2)})
    assert {k: v.item() for k, v in state["hparams"].items()} == pytest.approx(
        dict(lr=0.02, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.3), rel=1e-7)  # float32 params
    assert find(state, "grad_avg") is not None and state["hparams"]["lr"].dtype == torch.float32
    same = from_configs([OptimizerConfig("adam", lr=1e-3), OptimizerConfig("adam", lr=1e-2)])
    assert "hparams" in same[0].init({"w": torch.zeros(2)})  # one rule: plain optimizers, no select


@pytest.mark.parametrize("build,message", [
    (lambda: sgd(lr=0.1, momentum=-0.5), "Invalid momentum value: -0.5"),
    (lambda: sgd(lr=0.1, weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    (lambda: sgd(lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (lambda: sgd(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov momentum requires"),
    (lambda: sgd(lr=float("nan")), "Invalid learning rate: nan"),
    (lambda: adam(lr=1e-3, betas=(1.0, 0.999)), "Invalid beta parameter at index 0: 1.0"),
    (lambda: adam(lr=1e-3, betas=(0.9, -0.1)), "Invalid beta parameter at index 1: -0.1"),
    (lambda: adam(lr=1e-3, eps=-1e-8), "Invalid epsilon value: -1e-08"),
    (lambda: adamw(lr=1e-3, weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    (lambda: rmsprop(lr=1e-2, alpha=-0.9), "Invalid alpha value: -0.9"),
    (lambda: rmsprop(lr=1e-2, eps=-1.0), "Invalid epsilon value: -1.0"),
    (lambda: rmsprop(lr=1e-2, momentum=-0.1), "Invalid momentum value: -0.1"),
    (lambda: select([sgd()], 1), "select index = 1"),
    (lambda: select([], 0), "at least one optimizer"),
])
def test_impossible_values_fail_at_build_time(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build()


def test_integer_params_are_rejected_by_name():
    with pytest.raises(ValueError, match="floating-point params only"):
        sgd(lr=0.1).init({"w": torch.zeros(2), "n": torch.zeros((), dtype=torch.int64)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_select_population_on_cuda_matches_cpu_torch_runs():
    opt, params, state, grads, lrs, refs = mixed_population()
    cuda = lambda t: tree.to(t, "cuda")  # noqa: E731
    refs = [[cuda(r) for r in ref] for ref in refs]
    run_population(vmap(opt.update), cuda(params), cuda(state), [cuda(g) for g in grads], lrs.cuda(), refs, "cuda")


@pytest.mark.parametrize("name, torch_cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                             ("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_omitted_fields_take_torch_optims_defaults(name, torch_cls):
    """experiments.toml promises torch.optim's defaults for omitted fields (AdamW's decay is 1e-2, RMSprop's lr 1e-2)."""
    ours = OptimizerConfig(name)
    theirs = torch_cls([torch.zeros(1, requires_grad=True)]).defaults
    fields = {"lr": "lr", "weight_decay": "weight_decay", "momentum": "momentum", "dampening": "dampening",
              "nesterov": "nesterov", "eps": "eps", "alpha": "alpha", "centered": "centered"}
    for ours_name, torch_name in fields.items():
        if torch_name in theirs:
            assert getattr(ours, ours_name) == theirs[torch_name], (name, ours_name)
    if "betas" in theirs:
        assert (ours.beta1, ours.beta2) == tuple(theirs["betas"])
    # and the library's aliases build the same optimizer state hyperparameters
    from fer_func.optim import from_config
    opt_state = from_config(ours).init({"w": torch.zeros(2)})
    assert float(get_hparam(opt_state, "lr")) == pytest.approx(theirs["lr"], rel=1e-7)  # a float32 tensor


def test_an_lr_lent_to_each_update_gives_the_numbers_of_an_lr_held_in_the_state():
    """A population holds the lr once, in its schedule state: the carried optimizer state has none and
    the step lends it to each update. Over a mixed select population with changing rates that is
    bit for bit what writing the rate into the state every step gives."""
    opt, params, held, grads, lrs, _ = mixed_population()
    lent = without_hparams(held, "lr")
    assert "lr" not in hparam_names(lent) and "lr" in hparam_names(held) and "momentum" in hparam_names(lent)
    p_held, p_lent = params, params
    for s in range(STEPS):
        u_held, held = vmap(opt.update)(grads[s], with_hparams(held, lr=lrs[s]), p_held)
        u_lent, new = vmap(opt.update)(grads[s], add_hparams(lent, lr=lrs[s]), p_lent)
        lent = without_hparams(new, "lr")
        p_held, p_lent = apply_updates(p_held, u_held), apply_updates(p_lent, u_lent)
        for a, b in zip(tree.leaves(p_held), tree.leaves(p_lent)):
            assert torch.equal(a, b), f"step {s}"
    assert tree.flatten(lent)[1] == tree.flatten(without_hparams(held, "lr"))[1]  # the same carried structure
