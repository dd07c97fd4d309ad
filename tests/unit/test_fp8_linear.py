"""FP8 Linear layers as plain float8 buffers (kontext_engine/fp8_linear.py): torchao's per-row arithmetic, no
tensor subclass, and compiled blocks without a graph break. torch._scaled_mm runs on the CPU too."""

import gc
import io
import weakref
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from kontext_engine import EditRequest, KontextEngine
from kontext_engine.fp8_linear import Float8Linear, quantize_rows, swap_linears
from kontext_engine.optimizations import _compile, _quantize_fp8
from kontext_engine.settings import EngineSettings

BASE = EngineSettings(dtype="bfloat16")  # as FP8 runs on a GPU (its per-row GEMMs output bf16)


def test_rows_are_scaled_to_e4m3s_range_and_round_trip_within_its_precision():
    torch.manual_seed(0)
    x = torch.randn(5, 64) * torch.logspace(-3, 3, 5).unsqueeze(1)  # rows six orders of magnitude apart
    data, scale = quantize_rows(x)
    assert data.dtype == torch.float8_e4m3fn and scale.shape == (5, 1)
    assert torch.equal(data.float().abs().amax(dim=1), torch.full((5,), 448.0))  # each row's largest value
    # 3 mantissa bits: within 1/16 of the value, or half of the smallest step (2^-9) below e4m3's normal range
    assert ((data.float() * scale - x).abs() <= x.abs() / 16 + scale * 2**-10).all()


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


def test_each_linear_is_freed_as_it_is_swapped():
    model = torch.nn.Sequential(*(torch.nn.Linear(8, 8) for _ in range(4)))
    originals = [weakref.ref(m) for m in model]
    alive_at_each_swap = []
    init = Float8Linear.__init__

    def counting(self, linear):
        gc.collect()
        alive_at_each_swap.append(sum(ref() is not None for ref in originals))
        init(self, linear)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(Float8Linear, "__init__", counting)
        swap_linears(model, lambda module, name: True)
    assert alive_at_each_swap == [4, 3, 2, 1]
    assert all(isinstance(m, Float8Linear) for m in model)


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


def test_every_block_linear_is_swapped(eager_fp8):
    transformer = eager_fp8.pipeline.transformer
    blocks = [m for name, m in transformer.named_modules() if "transformer_blocks" in name]
    assert any(isinstance(m, Float8Linear) for m in blocks)
    assert not any(isinstance(m, torch.nn.Linear) for m in blocks)
    assert isinstance(transformer.x_embedder, torch.nn.Linear)  # outside the blocks: left alone


def test_the_fp8_image_stays_close_to_the_exact_one(eager_fp8):
    exact = image_of(KontextEngine.load(BASE))
    assert np.abs(image_of(eager_fp8) - exact).mean() < 0.5


def test_compiled_blocks_have_no_graph_break_and_render_the_same_image(eager_fp8):
    engine = fp8_engine()
    _compile(engine.pipeline, replace(BASE, compile="regional"))  # fullgraph=True: a graph break fails
    assert np.abs(image_of(engine) - image_of(eager_fp8)).mean() < 0.5  # bf16: fused kernels round differently
