"""FP8 Linear layers as plain float8 buffers (kontext_engine/fp8_linear.py): torchao's per-row arithmetic, no
tensor subclass, and compiled blocks without a graph break. torch._scaled_mm runs on the CPU too."""

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from kontext_engine import EditRequest, KontextEngine
from kontext_engine.fp8_linear import Float8Linear, quantize_rows
from kontext_engine.optimizations import _compile, _quantize_fp8
from kontext_engine.settings import EngineSettings

BASE = EngineSettings()


def test_the_product_is_the_dequantized_operands_product():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48).to(torch.bfloat16)
    fp8 = Float8Linear(linear)
    x = torch.randn(3, 7, 64, dtype=torch.bfloat16)
    data, scale = quantize_rows(x.reshape(-1, 64))
    weight = fp8.weight.double() * fp8.weight_scale.t().double()
    expected = (data.double() * scale.double()) @ weight.t() + linear.bias.double()
    out = fp8(x)
    assert out.shape == (3, 7, 48) and out.dtype == torch.bfloat16
    assert torch.allclose(out.reshape(-1, 48).double(), expected, rtol=1e-2, atol=1e-2)
    exact = linear(x).double()
    assert (out.double() - exact).norm() / exact.norm() < 0.06  # e4m3: 3 mantissa bits


def test_a_row_of_zeros_stays_finite():
    linear = torch.nn.Linear(16, 8)
    out = Float8Linear(linear)(torch.zeros(2, 16))
    assert torch.equal(out, linear.bias.detach().expand(2, 8))


def image_of(engine, seed=3):
    request = EditRequest("make it snowy", Image.new("RGB", (64, 64), (180, 60, 20)), seed, 4, 2.5, 64, 64, "png")
    (result,) = engine.run([request])
    return np.asarray(Image.open(io.BytesIO(result.image)), dtype=np.float32)


def fp8_engine(settings=BASE):
    engine = KontextEngine.load(settings)
    _quantize_fp8(engine.pipeline.transformer, modulation=True, linear="scaled_mm")
    return engine


@pytest.fixture(scope="module")
def eager_fp8(kontext_cache_dir):
    return fp8_engine()


def test_every_block_linear_is_swapped_and_nothing_is_a_subclass(eager_fp8):
    transformer = eager_fp8.pipeline.transformer
    blocks = [m for name, m in transformer.named_modules() if "transformer_blocks" in name]
    assert any(isinstance(m, Float8Linear) for m in blocks)
    assert not any(isinstance(m, torch.nn.Linear) for m in blocks)
    assert isinstance(transformer.x_embedder, torch.nn.Linear)  # outside the blocks: left alone
    tensors = [*transformer.parameters(), *transformer.buffers()]
    assert {type(t) for t in tensors} <= {torch.Tensor, torch.nn.Parameter}


def test_the_fp8_image_stays_close_to_the_exact_one(eager_fp8):
    exact = image_of(KontextEngine.load(BASE))
    assert np.abs(image_of(eager_fp8) - exact).mean() < 0.5  # measured: 0.07 (max 1 of 255)


def test_compiled_blocks_have_no_graph_break_and_render_the_same_image(eager_fp8):
    engine = fp8_engine()
    _compile(engine.pipeline, replace(BASE, compile="regional"))  # fullgraph=True: a graph break fails
    assert np.abs(image_of(engine) - image_of(eager_fp8)).max() <= 2
