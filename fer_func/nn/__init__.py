"""Pure-function layers. ``*_init(key, ...)`` returns parameters named as in ``torch.nn``;
apply functions take ``(params, x)`` (plus ``state`` for BatchNorm) with the batch axis first.
Populations add a variant axis on top with ``torch.func.vmap``.
"""
from fer_func.nn.conv import conv2d, conv2d_init
from fer_func.nn.dropout import dropout
from fer_func.nn.init import fans, weight_and_bias
from fer_func.nn.linear import linear, linear_init
from fer_func.nn.norm import batch_norm, batch_norm_init
from fer_func.nn.pool import global_avg_pool, max_pool2d
from fer_func.nn.residual import basic_block, basic_block_init

__all__ = ["conv2d", "conv2d_init", "dropout", "fans", "weight_and_bias", "linear", "linear_init",
           "batch_norm", "batch_norm_init", "global_avg_pool", "max_pool2d", "basic_block",
           "basic_block_init"]
