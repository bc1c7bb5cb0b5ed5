"""T5 relative position bias (Raffel et al. 2020, Sec. 2.1): one learned scalar per (bucket, head)
added to the scores; buckets exact for short distances, logarithmic up to max_distance, and one
bucket for everything beyond. One table shared by all layers, as in T5.

As HF transformers' T5 (src/transformers/models/t5/modeling_t5.py): the bucket function is
`_relative_position_bucket` (bidirectional=False for a decoder), the table starts N(0, d_model^-1/2)
(`_init_weights`, initializer_factor 1). max_distance: T5's 128 lies below its training length 512,
so every bucket gets a gradient; here it is min(128, L) by default (ModelConfig.t5_max_distance), so
a bucket used at evaluation was trained at L too; legacy runs used 128 at any L."""

import math

import torch
from torch import nn

from .base import PositionMethod

PROFILE_DISTANCES = (0, 16, 128)  # where describe() reads the learned bias off
NUM_BUCKETS = 32
MAX_DISTANCE = 128  # T5's


def t5_relative_bucket(
    relative_position: torch.Tensor,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> torch.Tensor:
    """Bucket id of each relative position (key - query), exactly as T5's reference code.

    Half the buckets hold distances 0 .. max_exact-1 one each; the rest cover max_exact ..
    max_distance logarithmically; farther distances share the last bucket. Bidirectional: the
    buckets are split in two halves, the upper half for keys after the query."""
    distance = -relative_position  # > 0: key lies in the past
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (distance < 0).long() * num_buckets
        distance = distance.abs()
    else:
        distance = distance.clamp(min=0)
    max_exact = num_buckets // 2
    # log-spaced buckets; clamp to 1 first so log never sees 0 (those distances are exact anyway);
    # truncated before max_exact is added, in the reference's order (tests/test_reference.py)
    log_ratio = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    far = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    far = far.clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < max_exact, distance, far)


def t5_max_distance(setting: int | None, train_len: int) -> int:
    """ModelConfig.t5_max_distance, or the default rule min(128, L), at least max_exact + 1 = 17 (the
    log formula needs max_distance > max_exact; below L = 17 the exact buckets past L go untrained
    whatever the rule)."""
    if setting is not None:
        return setting
    return max(min(MAX_DISTANCE, train_len), NUM_BUCKETS // 2 + 1)


class T5Position(PositionMethod):
    name = "t5"
    settings = ("t5_max_distance",)
    num_buckets = NUM_BUCKETS

    def __init__(self, config) -> None:
        super().__init__(config)
        self.max_distance = t5_max_distance(config.t5_max_distance, config.train_len)
        self.bias = nn.Embedding(self.num_buckets, config.n_head)  # (buckets, H)
        nn.init.normal_(self.bias.weight, std=config.d_model**-0.5)  # HF T5 _init_weights

    def distance_bias(self, distance: torch.Tensor) -> torch.Tensor:
        relative = -distance  # key - query, the reference's relative_position
        buckets = t5_relative_bucket(relative, False, self.num_buckets, self.max_distance)
        return self.bias(buckets).movedim(-1, 0)  # (..., H) -> (H, ...)

    def describe(self, length: int) -> dict:
        """The learned bias per head at a few distances, and the distance < length it favours most."""
        distance = torch.arange(max(length, *PROFILE_DISTANCES) + 1, device=self.bias.weight.device)
        buckets = t5_relative_bucket(-distance, False, self.num_buckets, self.max_distance)
        bias = self.bias(buckets).detach().cpu()  # (distances, H)
        heads = [{"head": h, **{f"bias_d{d}": float(bias[d, h]) for d in PROFILE_DISTANCES},
                  "peak_distance": int(bias[:length, h].argmax())}  # argmax: the nearest of equal peaks
                 for h in range(self.n_head)]
        labels = ["/".join(f"{b[f'bias_d{d}']:+.1f}" for d in PROFILE_DISTANCES) + f" @{b['peak_distance']}"
                  for b in heads]
        return {"t5_bias": heads, "column": "bias " + "/".join(map(str, PROFILE_DISTANCES)) + " @peak",
                "head_labels": labels}
