"""Each position method against its authors' reference code (docs/methods.md).

Every test transcribes the reference's formula as that code writes it, names the repository and
file it comes from, and compares numbers with posbench; none computes the expectation with
posbench's own function."""

import math

import pytest
import torch
import torch.nn.functional as F

from posbench import GPT, ModelConfig
from posbench.positions import METHODS, Positions
from posbench.positions.rope_scaling import apply_rope_scaling
from posbench.train import train

from .helpers import span, tiny_train


def gpt(pos: str, **overrides) -> GPT:
    values = dict(vocab_size=64, n_layer=1, n_head=4, d_model=128, train_len=64, pos=pos)
    values.update(overrides)
    torch.manual_seed(0)
    return GPT(ModelConfig(**values))


# --- YaRN ---------------------------------------------------------------------------------------


def hf_yarn(dim: int, base: float, factor: float, original_max_position_embeddings: int):
    """huggingface/transformers, src/transformers/modeling_rope_utils.py, `_compute_yarn_parameters`
    (beta_fast 32, beta_slow 1, truncate True, no mscale): (inv_freq, attention_factor)."""

    def get_mscale(scale, mscale=1):
        if scale <= 1:
            return 1.0
        return 0.1 * mscale * math.log(scale) + 1.0

    def find_correction_dim(num_rotations, dim, base, max_position_embeddings):
        return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    def find_correction_range(low_rot, high_rot, dim, base, max_position_embeddings):
        low = math.floor(find_correction_dim(low_rot, dim, base, max_position_embeddings))
        high = math.ceil(find_correction_dim(high_rot, dim, base, max_position_embeddings))
        return max(low, 0), min(high, dim - 1)

    def linear_ramp_factor(min, max, dim):
        if min == max:
            max += 0.001
        linear_func = (torch.arange(dim, dtype=torch.float32) - min) / (max - min)
        return torch.clamp(linear_func, 0, 1)

    pos_freqs = base ** (torch.arange(0, dim, 2).to(dtype=torch.float) / dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    low, high = find_correction_range(32, 1, dim, base, original_max_position_embeddings)
    inv_freq_extrapolation_factor = 1 - linear_ramp_factor(low, high, dim // 2).to(dtype=torch.float)
    inv_freq = (inv_freq_interpolation * (1 - inv_freq_extrapolation_factor)
                + inv_freq_extrapolation * inv_freq_extrapolation_factor)
    return inv_freq, get_mscale(factor)


@pytest.mark.parametrize("head_dim, train_len, factor", [
    (32, 64, 16.0),  # the quick preset: d=128 / 4 heads, L=64, evaluated to 16L
    (24, 128, 16.0),  # the small preset: d=192 / 8 heads, L=128
    (128, 512, 6.0),  # the paper preset: d=1024 / 8 heads, L=512, evaluated to 6L
    (8, 512, 4.0),
    (16, 16, 2.0),  # correction range collapsed to the first pair
])
@pytest.mark.parametrize("pos", ["rotary", "xpos"])
def test_yarn_frequencies_and_attention_factor_match_hf(pos, head_dim, train_len, factor):
    model = gpt(pos, n_head=2, d_model=2 * head_dim)
    apply_rope_scaling(model, "yarn", factor, train_len=train_len)
    inv_freq, attention_factor = hf_yarn(head_dim, model.pos.base, factor, train_len)
    torch.testing.assert_close(model.pos.inv_freq("cpu"), inv_freq, rtol=1e-6, atol=0)
    assert model.pos.attn_scale == pytest.approx(attention_factor, rel=1e-12)
    cos, _ = model.pos.cos_sin(Positions(0, 1), "cpu", torch.float32)  # position 0: cos = 1 times the factor
    torch.testing.assert_close(cos, torch.full_like(cos, attention_factor))


# --- FIRE ---------------------------------------------------------------------------------------


def fire_reference_bias(seq_length: int, c, init_L, L_multiplier, mlp, eps=1e-6) -> torch.Tensor:
    """Li et al. 2023 (FIRE), the appendix code's `FIRE.forward`, as written there: (H, T, T)."""
    positions = torch.arange(seq_length, dtype=torch.float)
    rel_distance = positions[:, None] - positions[None, :]
    threshold = torch.abs(L_multiplier * init_L)
    pos_normalizer = torch.max(positions, threshold)
    pos_normalizer = pos_normalizer[:, None]
    rel_distance = torch.log(torch.abs(c * rel_distance) + 1)
    pos_normalizer = torch.log(torch.abs(c * pos_normalizer) + 1) + eps
    normalized_distance = rel_distance / pos_normalizer
    return mlp(normalized_distance.unsqueeze(-1)).permute(2, 0, 1)


def by_hand_mlp(linear1: torch.nn.Linear, linear2: torch.nn.Linear):
    """nn.Sequential(Linear(1, 32), ReLU(), Linear(32, H)) of the reference, from posbench's weights."""
    return lambda u: torch.relu(u @ linear1.weight.T + linear1.bias) @ linear2.weight.T + linear2.bias


@pytest.mark.parametrize("T", [64, 700])  # within the threshold 512, and past it
def test_fire_bias_at_init_matches_the_paper_code(T):
    model = gpt("fire", train_len=64)  # the default: init_L 512 whatever L is, as the paper's code
    fire = model.pos
    names = {name for name, _ in fire.named_parameters()}
    assert "init_L" not in names and fire.init_L == 512.0, "a constant, never trained"
    assert fire.c_param.item() == pytest.approx(0.1) and fire.L_multiplier.item() == 1.0
    reference = fire_reference_bias(T, torch.tensor(0.1), torch.tensor(512.0), torch.tensor(1.0),
                                    by_hand_mlp(fire.mlp[0], fire.mlp[2]))
    with torch.no_grad():
        ours = fire.score_bias(*span(T, T, 0))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    torch.testing.assert_close(ours[:, causal], reference[:, causal], rtol=1e-5, atol=1e-6)
    # the MLP's inputs at L = 64: psi(63) / psi(512) = 0.50, the range the issue measured
    assert fire.normalized_distance(*span(64, 64, 0)).max().item() == pytest.approx(0.5026, abs=1e-3)


def test_fire_c_is_used_as_its_absolute_value_as_the_paper_code():
    fire = gpt("fire").pos
    with torch.no_grad():
        fire.c_param.fill_(-0.3)
        fire.L_multiplier.fill_(-0.05)  # threshold |-0.05 * 512| = 25.6
        ours = fire.score_bias(*span(40, 40, 0))
    reference = fire_reference_bias(40, torch.tensor(-0.3), torch.tensor(512.0), torch.tensor(-0.05),
                                    by_hand_mlp(fire.mlp[0], fire.mlp[2]))
    causal = torch.ones(40, 40, dtype=torch.bool).tril()
    torch.testing.assert_close(ours[:, causal], reference[:, causal], rtol=1e-5, atol=1e-6)


# --- T5 -----------------------------------------------------------------------------------------


def hf_relative_position_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """huggingface/transformers, src/transformers/models/t5/modeling_t5.py,
    `T5Attention._relative_position_bucket`, as written there."""
    relative_buckets = 0
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    relative_position_if_large = max_exact + (
        torch.log(relative_position.float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    relative_position_if_large = torch.min(
        relative_position_if_large, torch.full_like(relative_position_if_large, num_buckets - 1)
    )
    relative_buckets += torch.where(is_small, relative_position, relative_position_if_large)
    return relative_buckets


def test_t5_table_init_std_is_hf_d_model_to_the_minus_half():
    """HF modeling_t5.py `_init_weights`: relative_attention_bias ~ N(0, factor * d_model^-0.5)."""
    table = gpt("t5", d_model=512, n_head=64).pos.bias.weight  # 32 x 64 = 2048 entries
    assert table.std().item() == pytest.approx(512**-0.5, rel=0.06)
    assert abs(table.mean().item()) < 3 * 512**-0.5 / math.sqrt(table.numel())


@pytest.mark.parametrize("max_distance", [17, 32, 64, 128, 512])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_t5_bucket_function_equals_hf(bidirectional, max_distance):
    from posbench.positions import t5_relative_bucket

    relative = torch.arange(-20_000, 20_001)
    ours = t5_relative_bucket(relative, bidirectional, 32, max_distance)
    assert torch.equal(ours, hf_relative_position_bucket(relative, bidirectional, 32, max_distance))


@pytest.mark.parametrize("L", [32, 64, 128, 512, 2048])
def test_t5_every_bucket_reachable_at_16L_is_reachable_at_L(L):
    t5 = gpt("t5", train_len=L).pos
    assert t5.max_distance == min(128, L)

    def reachable(n):  # keys 0 .. n-1 behind the query (a decoder: bidirectional=False)
        return set(hf_relative_position_bucket(-torch.arange(n), False, 32, t5.max_distance).tolist())

    assert reachable(16 * L) <= reachable(L)
    with torch.no_grad():  # and posbench's bias reads those buckets of its table
        bias = t5.score_bias(*span(1, 16 * L, 16 * L - 1))[:, 0, :]  # the query at 16L - 1: every distance once
    expected = t5.bias.weight[hf_relative_position_bucket(-torch.arange(16 * L).flip(0), False, 32,
                                                          t5.max_distance)].T
    assert torch.equal(bias, expected)


# --- scaled-sinusoidal ---------------------------------------------------------------------------


def cramming_sinusoid(embedding_dim: int, max_seq_length: int) -> torch.Tensor:
    """JonasGeiping/cramming, cramming/architectures/embeddings.py, `SinusoidalPositional.__init__`."""
    pe = torch.zeros(max_seq_length, embedding_dim)
    position = torch.arange(0, max_seq_length, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, embedding_dim, 2).float() * (-math.log(10000.0) / embedding_dim))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def test_scaled_sinusoidal_embedding_is_layernorm_of_token_plus_scaled_sinusoid():
    """cramming: `ScaledSinosoidal` (scale_factor init 1 / d^0.5) added to the word embedding, then
    `EmbeddingComponent`'s norm (cramming/architectures/components.py: dropout(norm(embeds)))."""
    model = gpt("scaled-sinusoidal", d_model=64)
    assert model.pos.scale.item() == pytest.approx(1.0 / 64**0.5)
    with torch.no_grad():  # off the init, so a skipped affine or scale shows up
        model.pos.scale.fill_(0.37)
        model.ln_e.weight.normal_()
        model.ln_e.bias.normal_()
    idx = torch.randint(0, 64, (2, 50))
    embeds = model.wte(idx) + 0.37 * cramming_sinusoid(64, 50)
    expected = F.layer_norm(embeds, (64,), model.ln_e.weight, model.ln_e.bias, eps=model.ln_e.eps)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(idx), expected, rtol=1e-5, atol=1e-5)
    plain = gpt("scaled-sinusoidal", embed_norm=False)  # --no-embed-norm: without its LayerNorm
    assert plain.ln_e is None and plain.config.label() == "scaled-sinusoidal+noln"


# --- sinusoidal ----------------------------------------------------------------------------------


def fairseq_sinusoid(num_embeddings: int, embedding_dim: int) -> torch.Tensor:
    """facebookresearch/fairseq, fairseq/modules/sinusoidal_positional_embedding.py, `get_embedding`."""
    half_dim = embedding_dim // 2
    emb = math.log(10000) / (half_dim - 1)
    emb = torch.exp(torch.arange(half_dim, dtype=torch.float) * -emb)
    emb = torch.arange(num_embeddings, dtype=torch.float).unsqueeze(1) * emb.unsqueeze(0)
    return torch.cat([torch.sin(emb), torch.cos(emb)], dim=1).view(num_embeddings, -1)


def test_sinusoid_to_token_ratio_at_init_is_the_references():
    """fairseq (fairseq/models/transformer/transformer_base.py `Embedding`: normal(0, d^-0.5); the
    decoder's embed_scale = sqrt(d)): tokens of std 1 against the sinusoid above, as the ALiBi
    paper's sinusoidal baseline."""
    d, T = 128, 256
    torch.manual_seed(0)
    tokens = torch.nn.init.normal_(torch.empty(4096, d), mean=0, std=d**-0.5) * math.sqrt(d)
    pe = fairseq_sinusoid(T, d)
    reference = pe.pow(2).mean().sqrt().item() / tokens.std().item()
    assert reference == pytest.approx(0.71, abs=0.01)
    model = gpt("sinusoidal", d_model=d, vocab_size=4096)
    with torch.no_grad():
        added = model.pos.embed(torch.zeros(1, T, d), Positions(0, T))[0]  # the position signal alone
    ours = added.pow(2).mean().sqrt().item() / model.wte.weight.std().item()
    assert ours == pytest.approx(reference, rel=0.02)


# --- KERPLE --------------------------------------------------------------------------------------


def kerple_reference_bias(bias_p: torch.Tensor, bias_a: torch.Tensor, seq_len_k: int, eps=1e-2):
    """chijames/KERPLE, megatron/mpu/layers.py, `ParallelKerpleLog.forward` (its in-place clamp of
    .data, then the log kernel): (H, T, T), with the clamped parameters."""
    diff = torch.tril(
        torch.arange(seq_len_k).view(seq_len_k, 1).repeat(1, seq_len_k)
        + torch.arange(0, -seq_len_k, -1)
    ).to(torch.float32)
    bias_p.data = bias_p.data.clamp(min=eps)
    bias_a.data = bias_a.data.clamp(min=eps)
    return -bias_p[:, None, None] * torch.log(1 + bias_a[:, None, None] * diff)


def test_kerple_raw_parameters_clamped_after_a_step_as_the_reference():
    kerple = gpt("kerple", n_head=4).pos
    assert {n for n, _ in kerple.named_parameters()} == {"r1_param", "r2_param"}  # no softplus
    assert (kerple.r1_param >= 0.01).all() and (kerple.r1_param <= 2).all() and (kerple.r2_param <= 1).all()
    with torch.no_grad():
        kerple.r1_param.copy_(torch.tensor([0.02, 0.5, 1.5, 0.011]))
        kerple.r2_param.copy_(torch.tensor([0.9, 0.015, 0.3, 0.6]))
    optimizer = torch.optim.SGD(kerple.parameters(), lr=0.1)
    grad_1, grad_2 = torch.tensor([1.0, -1.0, 2.0, 0.05]), torch.tensor([0.0, 1.0, -1.0, 9.0])
    kerple.r1_param.grad, kerple.r2_param.grad = grad_1.clone(), grad_2.clone()
    optimizer.step()
    kerple.after_step(1, 0.5)
    # the reference: SGD step, then .data.clamp(min=0.01) before the parameters are used again
    p = torch.tensor([0.02, 0.5, 1.5, 0.011]) - 0.1 * grad_1
    a = torch.tensor([0.9, 0.015, 0.3, 0.6]) - 0.1 * grad_2
    reference = kerple_reference_bias(p, a, 30)
    torch.testing.assert_close(kerple.r1_param.detach(), p)  # clamped in place, as the reference
    torch.testing.assert_close(kerple.r2_param.detach(), a)
    assert kerple.r1_param.min().item() == pytest.approx(0.01)
    causal = torch.ones(30, 30, dtype=torch.bool).tril()
    with torch.no_grad():
        torch.testing.assert_close(kerple.score_bias(*span(30, 30, 0))[:, causal], reference[:, causal])


def test_the_training_loop_calls_after_step_once_per_optimizer_step(corpus, tmp_path, monkeypatch):
    calls = []
    clamp = METHODS["kerple"].after_step
    monkeypatch.setattr(METHODS["kerple"], "after_step",
                        lambda self, step, progress: calls.append((step, progress)) or clamp(self, step, progress))
    model_config, train_config = tiny_train(corpus, pos="kerple", steps=4)
    train(model_config, train_config, out=tmp_path / "run", show_progress=False)
    assert calls == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]  # steps done, and the fraction of training


# ----------------------------------------------------------------------------- ALiBi, rotary, xPos


def press_get_slopes(n: int) -> list[float]:
    """`get_slopes` of ofirpress/attention_with_linear_biases, fairseq/modules/multihead_attention.py,
    transcribed: a power of two starts at and multiplies by 2^(-8/n); otherwise the closest power of
    two's slopes, then every other slope of twice that many."""
    def get_slopes_power_of_2(n):
        start = 2 ** (-2 ** -(math.log2(n) - 3))
        ratio = start
        return [start * ratio**i for i in range(n)]

    if math.log2(n).is_integer():
        return get_slopes_power_of_2(n)
    closest_power_of_2 = 2 ** math.floor(math.log2(n))
    return (get_slopes_power_of_2(closest_power_of_2)
            + press_get_slopes(2 * closest_power_of_2)[0::2][: n - closest_power_of_2])


@pytest.mark.parametrize("n_head", range(1, 17))
def test_alibi_slopes_equal_the_reference_get_slopes(n_head):
    slopes = gpt("alibi", n_head=n_head, d_model=8 * n_head).pos.describe(8)["slope"]
    assert slopes == pytest.approx(press_get_slopes(n_head), rel=1e-6)


def hf_rotate_half(x: torch.Tensor) -> torch.Tensor:
    """`rotate_half` of huggingface/transformers, src/transformers/models/llama/modeling_llama.py."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def hf_rotary(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, base: float = 10000.0):
    """LlamaRotaryEmbedding (default rope) + `apply_rotary_pos_emb` of the same file, transcribed:
    inv_freq = 1 / base^(2i/d); emb = cat(freqs, freqs); q * cos + rotate_half(q) * sin."""
    dim = q.shape[-1]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = positions.float()[:, None] @ inv_freq[None, :]  # (T, d/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    return q * cos + hf_rotate_half(q) * sin, k * cos + hf_rotate_half(k) * sin


@pytest.mark.parametrize("start", [0, 37])
def test_rotary_equals_hf_llama_rotary(start):
    rotary = gpt("rotary", n_head=2, d_model=32).pos  # head dim 16
    q, k = torch.randn(2, 2, 12, 16, generator=torch.Generator().manual_seed(0)).unbind(0)
    q, k = q[None], k[None]  # (1, H, T, hd)
    expected = hf_rotary(q, k, torch.arange(start, start + 12))
    for got, want in zip(rotary.rotate(q, k, Positions(start, 12)), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def torchscale_xpos(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
    """microsoft/torchscale, torchscale/component/xpos_relative_position.py: scale_i =
    (2i + 0.4 d) / (1.4 d) per pair, queries times scale^(n / scale_base), keys times its inverse
    (scale_base 512), on HF's rotation. posbench pairs channels as halves (GPT-NeoX), not torchscale's
    every-two, and does not re-centre positions per call (docs/methods.md): so the decay is expanded
    to both halves."""
    d = q.size(-1)
    scale = (torch.arange(0, d, 2) + 0.4 * d) / (1.4 * d)  # (d/2,)
    decay = scale[None, :] ** (positions.float()[:, None] / 512)  # (T, d/2)
    decay = torch.cat((decay, decay), dim=-1)
    rq, rk = hf_rotary(q, k, positions)
    return rq * decay, rk / decay


def test_xpos_is_rotary_times_the_torchscale_decay():
    xpos = gpt("xpos", n_head=2, d_model=32).pos  # head dim 16
    q, k = torch.randn(2, 1, 2, 10, 16, generator=torch.Generator().manual_seed(1)).unbind(0)
    expected = torchscale_xpos(q, k, torch.arange(5, 15))
    for got, want in zip(xpos.rotate(q, k, Positions(5, 10)), expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("method", "reference"), [("rotary", hf_rotary), ("xpos", torchscale_xpos)])
def test_rotation_gradient_equals_autograd_through_the_reference(method, reference):
    """The rotation has its own backward (the rotation back): q's and k's gradients must equal
    autograd's through the transcribed references, for q, k strided views of one projection as in
    the model."""
    pos = gpt(method, n_head=2, d_model=32).pos  # head dim 16
    qkv = torch.randn(3, 10, 3, 2, 16, generator=torch.Generator().manual_seed(2))  # (B, T, 3, H, hd)
    grads = torch.randn(2, 3, 2, 10, 16, generator=torch.Generator().manual_seed(3))  # for q and k
    results = []
    for rotate in (lambda q, k: pos.rotate(q, k, Positions(7, 10)), lambda q, k: reference(q, k, torch.arange(7, 17))):
        leaf = qkv.clone().requires_grad_()
        q, k, _ = leaf.permute(2, 0, 3, 1, 4)  # (B, H, T, hd) views
        out = rotate(q, k)
        torch.autograd.backward(out, list(grads))
        results.append((*out, leaf.grad))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
