"""The FlexAttention path for score-bias methods equals the SDPA float-mask path. It is the CUDA
path; its logic (score_mod, causal block mask with an offset) is checked on the CPU too, where
torch.compile builds a CPU kernel (forward only: FlexAttention has no CPU backward)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from posbench.model import flex as model_module
from posbench.model.attention import causal_mask, distance_vector
from posbench.model.flex import flex_biased_attention, flex_diagonal_attention

from .helpers import ALL_METHODS, span, tiny_model

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


def inputs(device, head_dim=8):
    torch.manual_seed(0)
    # queries 16..63 over keys 0..63, as in a query chunk or a KV cache
    return [torch.randn(2, 4, n, head_dim, device=device) for n in (48, 64, 64)]


def flex_forms(method):
    """Both FlexAttention forms for queries 16..63 over keys 0..63: the (H, Tq, Tk) bias, and the
    per-distance vector (shift-invariant methods only)."""
    q_pos, k_pos = span(48, 64, 16)
    forms = {"dense": lambda q, k, v: flex_biased_attention(q, k, v, method.score_bias(q_pos, k_pos), 16)}
    if method.shift_invariant:
        forms["diagonal"] = lambda q, k, v: flex_diagonal_attention(
            q, k, v, distance_vector(method, q_pos, k_pos, torch.float32))
    return forms


@pytest.mark.parametrize("pos", ["alibi", "t5", "kerple", "fire"])
def test_flex_forward_equals_sdpa_on_cpu(pos):
    method = tiny_model(pos).pos
    q, k, v = inputs("cpu")
    with torch.no_grad():
        expected = reference(q, k, v, method, 16)
        assert (expected - reference_without_bias(q, k, v, 16)).abs().max() > 1000 * 1e-5
        for form, attend in flex_forms(method).items():
            assert torch.allclose(attend(q, k, v), expected, atol=1e-5), form


@cuda
@pytest.mark.parametrize("head_dim", [16, 24, 128])
@pytest.mark.parametrize("pos", ["t5", "kerple", "fire"])
def test_flex_gradients_into_a_learned_bias_on_cuda(pos, head_dim):
    """Forward and the gradients of q, k, v and of the method's parameters, both forms, against
    SDPA with the float mask; head dims down to flex.MIN_HEAD_DIM, 24 (the small preset's, not a power
    of two) and 128 (the paper's, with flex.WIDE_HEAD_BACKWARD's tiles)."""
    method = tiny_model(pos).cuda().pos
    q, k, v = (t.requires_grad_() for t in inputs("cuda", head_dim))
    leaves = [q, k, v, *method.parameters()]
    ref = reference(q, k, v, method, 16)
    grad_out = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, leaves, grad_out)
    assert (ref - reference_without_bias(q, k, v, 16)).abs().max() > 100 * 1e-4
    names = ["q", "k", "v", *(name for name, _ in method.named_parameters())]
    for form, attend in flex_forms(method).items():
        out = attend(q, k, v)
        errors = {"out": relative_error(out, ref),
                  **gradient_errors(names, torch.autograd.grad(out, leaves, grad_out), grads_ref)}
        assert max(errors.values()) < 1e-3, f"{form}: {errors}"  # float32 far under it (tf32: ~3e-4)


@cuda
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("pos", ["alibi", "t5"])
def test_flex_in_bf16_compiles_and_matches_at_common_head_dims(pos, head_dim):
    """bf16 forward and backward, a fixed and a learned per-distance bias, at head dims 32, 64 and 128
    (torch's default tiles overflowed an H200's shared memory at 64 forward and 128 backward:
    flex.kernel_options), against SDPA's float-mask path in float32, to bf16 precision."""
    method = tiny_model(pos).cuda().pos
    q, k, v = inputs("cuda", head_dim)
    leaves = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
    ref_leaves = [t.requires_grad_() for t in (q, k, v)]
    vector = distance_vector(method, *span(48, 64, 16), torch.float32)
    out = flex_diagonal_attention(*leaves, vector)
    ref = reference(*ref_leaves, method, 16)
    grad_out = torch.randn_like(ref)
    grads = torch.autograd.grad(out, leaves, grad_out.to(torch.bfloat16))
    grads_ref = torch.autograd.grad(ref, ref_leaves, grad_out)
    errors = {"out": relative_error(out.float(), ref), **gradient_errors("qkv", grads, grads_ref)}
    assert max(errors.values()) < 2e-2, errors  # bf16: ~4e-3


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    return ((x - reference).norm() / reference.norm()).item()


def gradient_errors(names, grads, references) -> dict[str, float]:
    """Each gradient's error relative to its reference's norm, or to a thousandth of the largest
    reference gradient where that is more: a gradient zero in exact arithmetic is rounding on both
    paths. FIRE's last bias adds one constant to every score, which the softmax cancels: on an H200
    its gradient read ~1e-5 on either path, 1.0-1.75 of each other "relative" (2026-11-27)."""
    floor = 1e-3 * max(reference.norm().item() for reference in references)
    errors = {}
    for name, grad, reference in zip(names, grads, references, strict=True):
        errors[name] = (grad.float().cpu() - reference.cpu()).norm().item() / max(reference.norm().item(), floor)
    return errors


BF16_ATOL = 1.5e-2  # about 5x the bf16 error of these logits (~0.003, measured with CPU autocast)


def bf16_model_and_inputs(pos, device):
    """A model whose attention output weighs in the residual stream (its projections scaled up 10x),
    so removing the position bias moves the logits by ~0.12 (t5) to ~0.29 (alibi), 8-19 times
    BF16_ATOL; at the default init it would move them by 0.03-0.04, under a loose tolerance."""
    model = tiny_model(pos, d_model=64)  # head dim 16: the FlexAttention path
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


@cuda
@pytest.mark.parametrize("pos", ALL_METHODS)
def test_a_bf16_training_step_on_cuda_matches_fp32_on_the_cpu(pos):
    """One training step as train.py takes it on CUDA (bf16 autocast, the fused kernels): the loss and
    every parameter's gradient finite and within bf16 error of the fp32 CPU step (under CPU autocast the
    worst relative error was 0.03, FIRE's MLP; a bias dropped on one path makes its parameters' 1.0)."""
    model, idx = bf16_model_and_inputs(pos, "cpu")
    model.train()
    targets = idx.roll(-1, dims=1)

    def loss_and_grads(model, idx, targets):
        loss = F.cross_entropy(model(idx).float().flatten(0, 1), targets.flatten())
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    loss_ref, grads_ref = loss_and_grads(model, idx, targets)
    model.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, grads = loss_and_grads(model, idx.cuda(), targets.cuda())
    assert torch.isfinite(loss) and abs(loss.item() - loss_ref.item()) < 2e-2, (loss.item(), loss_ref.item())
    errors = gradient_errors([name for name, _ in model.named_parameters()], grads, grads_ref)
    worst = max(errors, key=errors.get)
    assert all(torch.isfinite(g).all() for g in grads) and errors[worst] < 0.1, (worst, errors[worst])
