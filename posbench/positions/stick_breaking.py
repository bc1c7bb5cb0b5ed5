"""Stick-breaking attention (Tan et al., ICLR 2025, "Scaling Stick-Breaking Attention: An Efficient
Implementation and In-depth Study"; shawntan/stickbreaking-attention `stickbreaking_attention/sb_ref.py`
and its use in `tests/test_attn.py`): no position embedding, and no softmax. Query i breaks a stick
at its keys from the nearest back, beta_ij = sigmoid(z_ij), z = q.k / sqrt(d_h):

    A_ij = beta_ij * prod_{j<t<i} (1 - beta_it)          for keys j < i

in log space, log beta = logsigmoid(z) and log(1 - beta) = logsigmoid(-z) = -softplus(z). The query's
own key takes no share (the reference's default, attend_current=False: its mask is triu(0)); what is
left of the stick, 1 - sum_j A_ij = prod_{j<i} (1 - beta_ij), multiplies the query's own value
(`o = o + rem[..., None] * v`). posbench returns that remainder as the weight on the query's own key,
so the weights mix the values exactly as the reference's output does, sum to one, and are what the
heads probe reads. Positions come from the order of the keys, never from position ids."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import PositionMethod

LOG2_E = math.log2(math.e)


class StickBreaking(PositionMethod):
    name = "stick-breaking"

    def attention_weights(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Masked keys arrive as -inf: log beta = -inf (no share) and log(1 - beta) = 0 (no break)."""
        q_len, k_len = logits.shape[-2:]
        own = self.cached(("own", q_len, k_len, logits.device), lambda: own_keys(q_len, k_len, logits.device))
        z = logits.float()  # sb_ref.py: logits.float()
        log_rest = (-F.softplus(z)).masked_fill(own, 0.0)  # log(1 - beta); the own key breaks nothing
        # sum_{t >= j} log(1 - beta_it), summed from the query back (exact where the weights are large)
        through = log_rest.flip(-1).cumsum(-1).flip(-1)
        between = F.pad(through[..., 1:], (0, 1))  # sum over j < t only: the keys nearer the query
        # the own key's weight: the stick left after every key, exp(sum_{t<i} log(1 - beta_it))
        log_weights = torch.where(own, through[..., :1], F.logsigmoid(z) + between)
        # exp(x) = 2^(x log2 e): torch's exp leaves its vector path where the result underflows (the
        # far keys of a long window), exp2 does not (model/biased_attention.py measured it)
        return log_weights.mul_(LOG2_E).exp2_().to(logits.dtype)


def own_keys(q_len: int, k_len: int, device) -> torch.Tensor:
    """(q_len, k_len) bool: True at each query's own key (the queries are the last q_len keys)."""
    own = torch.zeros(q_len, k_len, dtype=torch.bool, device=device)
    own[:, k_len - q_len :] = torch.eye(q_len, dtype=torch.bool, device=device)
    return own
