"""The stride fast path (population/fast_stride.py) gives inductor's answers, and only those."""
from __future__ import annotations

import pytest
import sympy
import torch
import torch.nn.functional as F

from fer_func.population import fast_stride

cpp = pytest.importorskip("torch._inductor.codegen.cpp")
from torch.utils._sympy.functions import FloorDiv, ModularIndexing  # noqa: E402


def _inductors():
    fn = cpp.stride_at_vec_range
    return getattr(fn, "inductors", fn)


def test_polynomial_strides_equal_inductors():
    x0, x1, x2, x3 = sympy.symbols("x0 x1 x2 x3", integer=True, nonnegative=True)
    cases = [
        (576 * x1 + 48 * x2 + 2 * x3 + 24, x2, 16),
        (576 * x1 + 48 * x2 + 2 * x3 + 24, x3, 8),
        (9216 * x0 + 48 * (x1 + 2) + x2, x1, None),
        (2 * (3 * x0 + x1) + 7, x0, 16),
        (x1 + 5, x0, 16),  # the variable does not occur: stride 0
        (x0 * x1 + x2, x1, None),  # the stride is x0, a symbol: inductor's function answers
    ]
    inductors = _inductors()
    answered = 0
    for index, var, vec in cases:
        quick = fast_stride.polynomial_stride(index, var)
        if quick is not None:
            answered += 1
            reference = inductors(index, var, vec)
            assert quick == reference and type(quick) is type(reference), (index, var)
    assert answered == 5
    assert fast_stride.polynomial_stride(x0 * x1 + x2, x1) is None


def test_the_variable_inside_floor_division_or_modular_indexing_goes_to_inductor():
    x0, x1 = sympy.symbols("x0 x1", integer=True, nonnegative=True)
    assert fast_stride.polynomial_stride(9216 * FloorDiv(x0, 64) + x1, x0) is None
    assert fast_stride.polynomial_stride(110592 * ModularIndexing(x0, 1, 64) + x1, x0) is None
    assert fast_stride.polynomial_stride(x1 * FloorDiv(x0, 64) + x1, x1) is None  # a stride that is not a number


def test_functions_of_other_variables_are_constants():
    """The lr step's indices look like this: the stepped variable in plain terms, another inside FloorDiv."""
    x0, x1, x2 = sympy.symbols("x0 x1 x2", integer=True, nonnegative=True)
    index = 576 * x1 + 48 * x2 + 9216 * FloorDiv(x0, 64) + 110592 * ModularIndexing(x0, 1, 64) + 24
    inductors = _inductors()
    for var, vec in ((x1, 16), (x2, 8), (x2, None)):
        quick = fast_stride.polynomial_stride(index, var)
        reference = inductors(index, var, vec)
        assert quick is not None and quick == reference and type(quick) is type(reference)


def _step(w, b, x):
    """A conv, BatchNorm, ReLU, max-pool network's gradient: the index patterns a CNN step has."""
    def loss(w, b):
        y = F.conv2d(x, w, padding=1)
        y = F.batch_norm(y, None, None, training=True) + b[:, None, None]
        return F.max_pool2d(torch.relu(y), 2).square().mean()
    return torch.func.grad(loss, argnums=(0, 1))(w, b)


def test_every_answer_during_a_real_compile_equals_inductors(monkeypatch):
    """Compile a CNN gradient with the fast path checking itself: every answer it gives is inductor's."""
    import torch._inductor.config as inductor_config

    inductors = _inductors()
    asked, answered = [0], [0]

    def checked(index, var, vec_length=None):
        asked[0] += 1
        reference = inductors(index, var, vec_length)
        quick = fast_stride.polynomial_stride(index, var)
        if quick is not None:
            answered[0] += 1
            assert quick == reference and type(quick) is type(reference), (index, var, vec_length)
        return reference

    monkeypatch.setattr(cpp, "stride_at_vec_range", checked)
    torch._dynamo.reset()
    w, b, x = torch.randn(8, 3, 3, 3), torch.randn(8), torch.randn(4, 3, 12, 12)
    with inductor_config.patch(fx_graph_cache=False):  # generate the code here, not from the disk cache
        gw, gb = torch.compile(_step, fullgraph=True)(w, b, x)
    torch._dynamo.reset()
    ew, eb = _step(w, b, x)
    torch.testing.assert_close(gw, ew, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gb, eb, rtol=1e-4, atol=1e-5)
    assert asked[0] > 0 and answered[0] > asked[0] // 2, (asked, answered)


def test_install_puts_the_fast_path_in_front_once(monkeypatch):
    monkeypatch.setattr(cpp, "stride_at_vec_range", cpp.stride_at_vec_range)  # restored afterwards
    original = _inductors()
    monkeypatch.setattr(cpp, "stride_at_vec_range", original)
    assert fast_stride.install() and fast_stride.install()
    installed = cpp.stride_at_vec_range
    assert installed.inductors is original and fast_stride.install() and cpp.stride_at_vec_range is installed
    x0, x1 = sympy.symbols("x0 x1", integer=True)
    assert installed(48 * x0 + x1, x0, 16) == 48
    assert installed(9216 * FloorDiv(x0, 64) + x1, x1, 16) == original(9216 * FloorDiv(x0, 64) + x1, x1, 16)
