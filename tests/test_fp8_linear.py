"""The FP8 linear: its three GEMMs see exactly the inputs DeepSeek-V3's recipe gives them, its gradients stay
close to FP32's, master weights stay FP32, and the converter keeps the router, head, embeddings and norms."""

import pytest
import torch
from torch import nn

from utils.fp8.formats import calc_diff, quantize, quantize_dequantize
from utils.fp8.gemm import blockwise_gemm
from utils.fp8.linear import EmulatedLinear, convert_linears, convert_linears_to_fp8, precision_summary
from utils.moe.toy_decoder import ToyDecoderConfig, build_toy_decoder


def _layer_and_input(precision, bias=True, seed=0, in_features=256, out_features=192, tokens=(3, 50)):
    torch.manual_seed(seed)
    reference = nn.Linear(in_features, out_features, bias=bias)
    layer = EmulatedLinear.from_linear(reference, precision)
    x = torch.randn(*tokens, in_features, requires_grad=True)
    return reference, layer, x


def _grads(module, x, grad_out):
    x = x.detach().clone().requires_grad_(True)
    module.zero_grad()
    y = module(x)
    y.backward(grad_out)
    bias_grad = None if module.bias is None else module.bias.grad.clone()
    return y.detach(), x.grad, module.weight.grad.clone(), bias_grad


def test_fp32_precision_is_exactly_nn_linear():
    reference, layer, x = _layer_and_input("fp32")
    grad_out = torch.randn(3, 50, 192)
    for got, want in zip(_grads(layer, x, grad_out), _grads(reference, x, grad_out), strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_fp8_forward_is_the_deepseek_gemm():
    """Fprop: x in 1x128 tiles, W in 128x128 blocks, FP32 accumulation; equals the per-group scaled GEMM."""
    _, layer, x = _layer_and_input("fp8", bias=False)
    x2d = x.detach().reshape(-1, 256)
    y = layer(x).detach().reshape(-1, 192)
    expected = quantize_dequantize(x2d, "e4m3", "tile1x128") @ quantize_dequantize(layer.weight, "e4m3",
                                                                                     "block128x128").T
    assert torch.equal(y, expected)
    per_group = blockwise_gemm(quantize(x2d, "e4m3", "tile1x128"),
                               quantize(layer.weight, "e4m3", "block128x128"))
    assert torch.allclose(y, per_group, rtol=1e-5, atol=1e-4)


def test_fp8_backward_gemms_use_the_recipes_tiles():
    _, layer, x = _layer_and_input("fp8", bias=False)
    grad_out = torch.randn(3, 50, 192)
    _, grad_x, grad_w, _ = _grads(layer, x, grad_out)
    x2d, dy = x.detach().reshape(-1, 256), grad_out.reshape(-1, 192)
    w_q = quantize_dequantize(layer.weight.detach(), "e4m3", "block128x128")
    x_q = quantize_dequantize(x2d, "e4m3", "tile1x128")
    # Dgrad: dy in 1x128 tiles along N, the same weight blocks.
    assert torch.equal(grad_x.reshape(-1, 256), quantize_dequantize(dy, "e4m3", "tile1x128") @ w_q)
    # Wgrad: dy and the cached FP8 activation re-tiled 128x1 (along the tokens, this GEMM's reduction).
    dy_cols = quantize_dequantize(dy.T, "e4m3", "tile1x128")
    x_cols = quantize_dequantize(x_q.T, "e4m3", "tile1x128")
    assert torch.equal(grad_w, dy_cols @ x_cols.T)


def test_fp8_gradients_stay_close_to_fp32():
    reference, layer, x = _layer_and_input("fp8")
    grad_out = torch.randn(3, 50, 192)
    for got, want in zip(_grads(layer, x, grad_out), _grads(reference, x, grad_out), strict=True):
        assert calc_diff(got, want) < 2e-3
    assert layer.weight.dtype == torch.float32 and layer.weight.grad.dtype == torch.float32


def test_bf16_is_closer_than_fp8():
    reference, fp8_layer, x = _layer_and_input("fp8")
    bf16_layer = EmulatedLinear.from_linear(reference, "bf16")
    grad_out = torch.randn(3, 50, 192)
    want = _grads(reference, x, grad_out)
    fp8_diff = calc_diff(_grads(fp8_layer, x, grad_out)[2], want[2])
    bf16_diff = calc_diff(_grads(bf16_layer, x, grad_out)[2], want[2])
    assert 0 < bf16_diff < fp8_diff / 10


def test_e5m2_gradients_are_an_option():
    torch.manual_seed(0)
    layer = EmulatedLinear(256, 64, precision="fp8", grad_fmt="e5m2")
    layer(torch.randn(10, 256)).sum().backward()
    assert torch.isfinite(layer.weight.grad).all()
    assert "grad_fmt=e5m2" in repr(layer)


def test_non_finite_activations_raise_rather_than_poison_the_step():
    _, layer, x = _layer_and_input("fp8")
    with pytest.raises(ValueError, match="finite"):
        layer(x.detach().index_fill(1, torch.tensor([3]), float("nan")))


def test_bad_precision_is_refused():
    with pytest.raises(ValueError, match="Unknown precision"):
        EmulatedLinear(4, 4, precision="fp4")
    with pytest.raises(ValueError, match="Unsupported FP8 format"):
        convert_linears(nn.Sequential(nn.Linear(4, 4)), "fp8", fmt="e3m4")


def _small_decoder():
    return build_toy_decoder(ToyDecoderConfig(n_blocks=1, n_routed=4, d_model=32, d_expert=32), seed=0)


def test_converter_keeps_router_head_embeddings_and_norms():
    model = _small_decoder()
    before = {name: p for name, p in model.named_parameters()}
    converted = convert_linears_to_fp8(model)
    assert converted and all("router" not in n and n != "head" for n in converted)
    assert type(model.head) is nn.Linear and type(model.blocks[0].moe.router) is nn.Linear
    assert isinstance(model.blocks[0].attn.qkv, EmulatedLinear)
    assert isinstance(model.blocks[0].moe.experts[0].down_proj, EmulatedLinear)
    assert type(model.embed) is nn.Embedding and type(model.norm) is nn.RMSNorm
    # The same Parameter objects: master weights stay FP32 and an existing optimizer still holds them.
    assert all(p is before[name] for name, p in model.named_parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    remaining = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    assert sorted(remaining) == ["blocks.0.moe.router", "head"]


def test_converted_model_computes_nearly_the_same_function():
    model = _small_decoder()
    tokens = torch.randint(0, 15, (4, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(tokens)
        convert_linears_to_fp8(model)
        after = model(tokens)
    assert 0 < calc_diff(after, before) < 1e-3


def test_custom_skip_patterns_and_precision_summary():
    model = _small_decoder()
    converted = convert_linears(model, "bf16", skip=("router", "head", "experts"))
    assert converted == ["blocks.0.attn.qkv", "blocks.0.attn.out", "blocks.0.moe.shared_experts.0.gate_proj",
                         "blocks.0.moe.shared_experts.0.up_proj", "blocks.0.moe.shared_experts.0.down_proj"]
    summary = precision_summary(model)
    assert summary["fp8"] == 0
    assert summary["bf16"] == sum(model.get_submodule(n).weight.numel() for n in converted)
    assert sum(summary.values()) == sum(p.numel() for p in model.parameters())


def test_a_converted_model_trains():
    from utils.moe.train import train

    model = _small_decoder()
    convert_linears_to_fp8(model)
    history = train(model, 3, batch_size=8, progress=False)
    assert len(history.loss) == 3 and all(torch.isfinite(torch.tensor(history.loss)))


@pytest.mark.parametrize("precision", ["fp8", "bf16", "fp32"])
def test_an_expert_no_token_chose_runs_an_empty_batch(precision):
    """A routed expert can get no tokens in a step: its GEMMs are empty and its weight gradient is zero."""
    layer = EmulatedLinear(64, 32, precision=precision)
    x = torch.zeros(0, 64, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert y.shape == (0, 32) and x.grad.shape == (0, 64)
    assert torch.equal(layer.weight.grad, torch.zeros(32, 64))


def test_a_float64_layer_computes_in_float64():
    """Measurements that must be the same on every CPU run the layer in float64 (linear_gemm_errors)."""
    reference = torch.nn.Linear(96, 48, bias=False, dtype=torch.float64)
    x = torch.randn(20, 96, dtype=torch.float64)
    layer = EmulatedLinear.from_linear(reference, "fp32")
    assert layer(x).dtype == torch.float64
    assert torch.allclose(layer(x), reference(x), rtol=0, atol=1e-12)
    bf16 = EmulatedLinear.from_linear(reference, "bf16")(x)
    assert bf16.dtype == torch.float64 and not torch.equal(bf16, reference(x))
