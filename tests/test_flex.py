"""The FlexAttention path for score-bias methods equals the SDPA float-mask path. It is the CUDA
path; its logic (score_mod, causal block mask with an offset) is checked on the CPU too, where
torch.compile builds a CPU kernel (forward only: FlexAttention has no CPU backward)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from posbench import flex as model_module
from posbench.attention import causal_mask
from posbench.flex import flex_biased_attention

from .helpers import span, tiny_model

pytestmark = pytest.mark.skipif(model_module.flex_attention is None, reason="torch without FlexAttention")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


def reference(q, k, v, method, start):
    mask = causal_mask(method, *span(q.size(2), k.size(2), start), q.device, q.dtype)[None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def reference_without_bias(q, k, v, start):
    """Causal attention of queries at start.. with no position bias at all: what a path that
    dropped the bias would give. Every tolerance below sits far under its distance to the reference."""
    i = start + torch.arange(q.size(2), device=q.device)[:, None]  # query positions
    visible = torch.arange(k.size(2), device=q.device)[None] <= i  # (q, k): key j visible when j <= i
    return F.scaled_dot_product_attention(q, k, v, attn_mask=visible)


def without_position_bias(model):
    """A copy of an alibi or t5 model whose score bias is zero everywhere."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        if model.config.pos == "alibi":
            model.pos.slopes.zero_()
        else:
            model.pos.bias.weight.zero_()
    model.pos._static.clear()  # memoised slopes x distances
    return model


def inputs(device):
    torch.manual_seed(0)
    # queries 16..63 over keys 0..63, as in a query chunk or a KV cache
    return torch.randn(2, 4, 48, 8, device=device), torch.randn(2, 4, 64, 8, device=device), \
        torch.randn(2, 4, 64, 8, device=device)


@pytest.mark.parametrize("pos", ["alibi", "t5"])
def test_flex_forward_equals_sdpa_on_cpu(pos):
    method = tiny_model(pos).pos
    q, k, v = inputs("cpu")
    with torch.no_grad():
        out = flex_biased_attention(q, k, v, method.score_bias(*span(48, 64, 16)), 16)
        expected = reference(q, k, v, method, 16)
        assert torch.allclose(out, expected, atol=1e-5)
        assert (expected - reference_without_bias(q, k, v, 16)).abs().max() > 1000 * 1e-5


@cuda
def test_flex_gradients_into_a_learned_bias_on_cuda():
    method = tiny_model("t5").cuda().pos
    q, k, v = inputs("cuda")
    ref = reference(q, k, v, method, 16)
    grad_ref = torch.autograd.grad(ref.sum(), method.bias.weight)[0]
    out = flex_biased_attention(q, k, v, method.score_bias(*span(48, 64, 16)), 16)
    grad = torch.autograd.grad(out.sum(), method.bias.weight)[0]
    assert torch.allclose(out, ref, atol=1e-4)
    assert (ref - reference_without_bias(q, k, v, 16)).abs().max() > 100 * 1e-4
    assert torch.allclose(grad, grad_ref, atol=1e-3)
    assert grad_ref.abs().max() > 100 * 1e-3


BF16_ATOL = 1.5e-2  # about 5x the bf16 error of these logits (~0.003, measured with CPU autocast)


def bf16_model_and_inputs(pos, device):
    """A model whose attention output weighs in the residual stream (its projections scaled up 10x),
    so removing the position bias moves the logits by ~0.15 (t5) to ~0.19 (alibi), about ten times
    BF16_ATOL; at the default init it would move them by 0.03-0.04, under a loose tolerance."""
    model = tiny_model(pos)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.proj.weight.mul_(10)
    idx = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0))  # the same on any device
    return model.to(device), idx.to(device)


@cuda
@pytest.mark.parametrize("pos", ["alibi", "t5"])
def test_model_bf16_on_cuda_matches_fp32_reference(pos):
    model, idx = bf16_model_and_inputs(pos, "cuda")
    with torch.no_grad():
        reference_logits = model.cpu()(idx.cpu())  # the CPU SDPA path, fp32
        unbiased_logits = without_position_bias(model)(idx.cpu())
        model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fused = model(idx)  # FlexAttention, bf16
    assert (reference_logits - unbiased_logits).abs().max() > 5 * BF16_ATOL, "the bias must matter here"
    assert torch.allclose(fused.float().cpu(), reference_logits, atol=BF16_ATOL, rtol=0)
