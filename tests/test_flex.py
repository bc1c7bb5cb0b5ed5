"""The FlexAttention path for score-bias methods equals the SDPA float-mask path. It is the CUDA
path; its logic (score_mod, causal block mask with an offset) is checked on the CPU too, where
torch.compile builds a CPU kernel (forward only: FlexAttention has no CPU backward)."""

import pytest
import torch
import torch.nn.functional as F

from posbench import model as model_module
from posbench.model import causal_mask, flex_biased_attention

from .helpers import tiny_model

pytestmark = pytest.mark.skipif(model_module.flex_attention is None, reason="torch without FlexAttention")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")


def reference(q, k, v, method, start):
    mask = causal_mask(method, q.size(2), k.size(2), start, q.device, q.dtype)[None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


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
        out = flex_biased_attention(q, k, v, method.score_bias(48, 64, 16), 16)
        assert torch.allclose(out, reference(q, k, v, method, 16), atol=1e-5)


@cuda
def test_flex_gradients_into_a_learned_bias_on_cuda():
    method = tiny_model("t5").cuda().pos
    q, k, v = inputs("cuda")
    ref = reference(q, k, v, method, 16)
    grad_ref = torch.autograd.grad(ref.sum(), method.bias.weight)[0]
    out = flex_biased_attention(q, k, v, method.score_bias(48, 64, 16), 16)
    grad = torch.autograd.grad(out.sum(), method.bias.weight)[0]
    assert torch.allclose(out, ref, atol=1e-4)
    assert torch.allclose(grad, grad_ref, atol=1e-3)


@cuda
@pytest.mark.parametrize("pos", ["alibi", "t5"])
def test_model_bf16_on_cuda_matches_fp32_reference(pos):
    model = tiny_model(pos).cuda()
    idx = torch.randint(0, 64, (2, 32), device="cuda")
    with torch.no_grad():
        reference_logits = model.cpu()(idx.cpu())  # the CPU SDPA path, fp32
        model.cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fused = model(idx)  # FlexAttention, bf16
    assert torch.allclose(fused.float().cpu(), reference_logits, atol=5e-2, rtol=5e-2)
