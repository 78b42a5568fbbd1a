"""How populations compile: the options each device gets, and that the CPU's really take effect."""
import re

import pytest
import torch
import torch.nn.functional as F
from torch._inductor.utils import run_and_get_code

from fer_func.compile import compile_options, compile_program


def test_options_per_backend_and_device():
    assert compile_options(True, device_type="cpu") == {"backend": "inductor",
                                                         "options": {"layout_optimization": False}}
    assert compile_options(True, device_type="cuda") == {"backend": "inductor"}  # inductor's own layout choice
    assert compile_options("aot_eager", device_type="cpu") == {"backend": "aot_eager"}
    assert compile_options(True, cuda_graphs=True, device_type="cuda") == {"mode": "reduce-overhead"}


def _conv_output_strides(options):
    """Strides inductor gives a vmapped (grouped) convolution's output in the code it generates."""
    torch._dynamo.reset()
    w = torch.randn(3, 8, 2, 3, 3)
    x = torch.randn(3, 4, 2, 10, 10)
    fn = compile_program(torch.func.vmap(lambda wi, xi: torch.relu(F.conv2d(xi, wi, padding=1)) * 2), **options)
    out, codes = run_and_get_code(fn, w, x)
    torch.testing.assert_close(out, torch.stack([torch.relu(F.conv2d(x[i], w[i], padding=1)) * 2 for i in range(3)]))
    found = re.findall(r"assert_tensor_metadata\(buf\d+, \((\d+), (\d+), (\d+), (\d+)\), \((\d+), (\d+), (\d+), (\d+)\)"
                       r", torch.float32, 'torch.ops.aten.convolution.default'\)", "\n".join(codes))
    assert found, "no convolution metadata in inductor's code: this test no longer sees the layout it checks"
    return [tuple(int(v) for v in f[4:]) for f in found]


@pytest.mark.slow
def test_cpu_programs_keep_the_graphs_layout_where_inductor_would_go_channels_last():
    # (N, K*C, H, W) = (4, 24, 10, 10): contiguous strides are (2400, 100, 10, 1), channels-last (2400, 1, 240, 24)
    assert _conv_output_strides(compile_options(True, device_type="cpu")) == [(2400, 100, 10, 1)]
    assert _conv_output_strides({"backend": "inductor"}) == [(2400, 1, 240, 24)]  # what the option turns off
