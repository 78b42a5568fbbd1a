"""Inductor's CPU kernels go to g++ as they are generated (population.early_cpp): same results, earlier start."""
import torch

from fer_func.population import early_cpp
from fer_func.population.compiled import compile_program


def test_cpu_kernels_are_submitted_while_the_graph_is_generated_and_compute_what_eager_does(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # nothing cached: code is generated
    before = early_cpp.submitted

    def fn(x, w):  # a reduction and two pointwise kernels, with a shape no other test compiles
        h = torch.tanh(x @ w) * 3.0
        return h.softmax(-1) + h.sum(-1, keepdim=True)

    x, w = torch.linspace(-1, 1, 37 * 13).reshape(37, 13), torch.linspace(1, -1, 13 * 29).reshape(13, 29)
    from torch._inductor.utils import fresh_cache
    with fresh_cache():
        out = compile_program(fn)(x, w)
    assert early_cpp.submitted > before  # the hook ran: kernels were submitted before the module loaded
    torch.testing.assert_close(out, fn(x, w))
    assert early_cpp.install() is True  # idempotent: the hook is installed once, not wrapped again
