"""Inductor's dtype-propagation handler is built once, and again when its rule tables grow (population/dtype_rules_once.py)."""
from __future__ import annotations

import torch
import torch._inductor.lowering  # noqa: F401 - registers the dtype rules, as it does before any code generation
from torch._inductor import utils
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND
from torch._inductor.dtype_propagation import DtypePropagationOpsHandler

from fer_func.population import dtype_rules_once


def test_the_handler_is_rebuilt_only_when_a_rule_is_added(tmp_path):
    assert dtype_rules_once.install() and dtype_rules_once.install()  # a second install is a no-op
    handler = DtypePropagationOpsHandler()
    assert "add" in vars(handler)
    del handler.add  # set by a build: a later call that rebuilt the handler would set it again
    assert DtypePropagationOpsHandler() is handler and "add" not in vars(handler)

    rule = "fer_func_test_rule"
    utils.register_op_dtype_propagation_rules(rule, ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT, None)
    try:
        DtypePropagationOpsHandler()  # a table grew: rebuilt, with the new rule and the old ones
        assert rule in vars(handler) and "add" in vars(handler)
    finally:
        del utils.op_dtype_propagation_rules[rule]
        vars(handler).pop(rule, None)
    DtypePropagationOpsHandler()
    assert rule not in vars(handler) and "add" in vars(handler)


def mixed_dtypes(x, i):
    keep = (i % 3 == 0) | (x > 0.5)  # bool from int and float ops
    scaled = torch.where(keep, x * 2.0, -x) + (i >> 1).to(x.dtype)
    return scaled.sum(-1), keep.to(torch.int32).sum(-1), (i * 3 + 1).max(-1).values


def test_compiled_code_computes_the_same_with_the_handler_built_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    dtype_rules_once.install()
    # quarters of small integers: every sum is exact in float64, whatever order the kernel adds in
    x, i = torch.randint(-8, 8, (8, 37)).to(torch.float64) / 4, torch.randint(0, 1000, (8, 37))
    compiled = torch.compile(mixed_dtypes, fullgraph=True)
    for got, want in zip(compiled(x, i), mixed_dtypes(x, i)):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0)
