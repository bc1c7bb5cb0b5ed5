"""Text generation with a KV cache: the prompt is run once (prefill), then each step feeds only the
newest token at position start = cache length, the earlier keys and values coming from the cache.

Read top to bottom: the length check, picking one token, generate, sample_text (what `posbench
sample` calls)."""

from __future__ import annotations

from pathlib import Path

import torch

from .common import DEVICE, resolve_device
from .errors import LengthError, PosbenchError
from .model.gpt import GPT, KVCache
from .runs.folder import load_run, resolve_run

# `posbench sample`'s defaults (the CLI reads them from here)
NEW_TOKENS, TEMPERATURE, TOP_K, SEED = 200, 0.8, 50, 0


def check_room(model: GPT, prompt_len: int, n_tokens: int) -> None:
    """A clear LengthError when the method cannot encode the positions generation needs: the prompt
    takes positions 0..T-1 and every new token but the last is fed back, so T + n - 1 positions."""
    limit = model.pos.max_positions
    if limit is None or prompt_len + n_tokens - 1 <= limit:
        return
    name = model.config.pos
    if prompt_len > limit:
        raise LengthError(f"'{name}' positions stop at {limit}: the prompt alone has {prompt_len} tokens")
    raise LengthError(f"'{name}' positions stop at {limit}: after a prompt of {prompt_len} tokens there is "
                      f"room for at most {limit - prompt_len + 1} new tokens, {n_tokens} were asked for")


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None,
               generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits of the next token -> (B, 1) ids: argmax at temperature 0, else a draw from
    softmax(logits / temperature) restricted to the top_k most likely tokens (None or 0: all)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1) the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)


@torch.inference_mode()
def generate(model: GPT, idx: torch.Tensor, n_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """idx: (B, T) prompt ids (T >= 1) -> (B, T + n_tokens) ids: the prompt, then n_tokens generated
    ones. The model should be in eval mode (dropout off); `generator` seeds the draws."""
    if idx.ndim != 2 or idx.size(1) == 0:
        raise PosbenchError("the prompt must hold at least one token")
    if n_tokens < 0:
        raise PosbenchError(f"--tokens must be >= 0, got {n_tokens}")
    if temperature < 0:
        raise PosbenchError(f"--temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 0:
        raise PosbenchError(f"--top-k must be >= 0 (0 = no cut), got {top_k}")
    check_room(model, idx.size(1), n_tokens)
    if n_tokens == 0:
        return idx
    out = [idx]
    cache = KVCache(model.config.n_layer)
    logits = model(idx, start=0, cache=cache)[:, -1]  # (B, V): prefill, next-token logits
    for step in range(n_tokens):
        token = next_token(logits, temperature, top_k, generator)  # (B, 1)
        out.append(token)
        if step + 1 < n_tokens:  # the last token is never fed back
            logits = model(token, start=cache.length, cache=cache)[:, -1]  # (B, V)
    return torch.cat(out, dim=1)


def sample_text(
    run: str | Path | None,
    prompt: str,
    n_tokens: int = NEW_TOKENS,
    temperature: float = TEMPERATURE,
    top_k: int | None = TOP_K,
    seed: int = SEED,
    device: str = DEVICE,
) -> dict:
    """Load a run, continue `prompt` by n_tokens tokens: {"run", "pos", "prompt", "completion",
    "prompt_tokens", "new_tokens"} (completion = the decoded new tokens only)."""
    torch_device = resolve_device(device)
    run_dir = resolve_run(run)
    model, tokenizer, _ = load_run(run_dir, device=str(torch_device))
    ids = torch.as_tensor(tokenizer.encode(prompt), dtype=torch.long, device=torch_device)[None]  # (1, T)
    if ids.size(1) == 0:
        raise PosbenchError("--prompt is empty; give at least one character")
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    out = generate(model, ids, n_tokens, temperature, top_k, generator)  # (1, T + n)
    # decoded whole, then cut: sentencepiece drops the leading space of a sequence's first piece
    text, head = tokenizer.decode(out[0]), tokenizer.decode(ids[0])
    completion = text[len(head):] if text.startswith(head) else tokenizer.decode(out[0, ids.size(1):])
    return {"run": str(run_dir), "pos": model.config.pos, "prompt": prompt, "completion": completion,
            "prompt_tokens": ids.size(1), "new_tokens": n_tokens}
