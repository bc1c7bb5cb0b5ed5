"""Scaled sinusoidal: the Vaswani sinusoid times one learnable scalar initialised to d^-1/2
(Hua et al. 2022, "Transformer Quality in Linear Time"), as cramming (Geiping & Goldstein 2022,
cramming/architectures/embeddings.py `ScaledSinosoidal`) uses it: word embedding + scale * sinusoid,
then the embedding block's LayerNorm (EmbeddingComponent; normalization on in cramming's configs).
That LayerNorm is GPT.ln_e, on by default for this method (reference_embed_norm); a run with
--no-embed-norm drops it and is labelled scaled-sinusoidal+noln."""

import torch
from torch import nn

from .ids import Positions
from .sinusoidal import SinusoidalPosition


class ScaledSinusoidalPosition(SinusoidalPosition):
    name = "scaled-sinusoidal"
    settings = ()  # the learned scale replaces sinusoidal's fixed ratio
    reference_embed_norm = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.scale = nn.Parameter(torch.tensor(config.d_model**-0.5))

    def describe(self, length: int) -> dict:
        scale = self.scale.item()
        return {"scale": scale, "column": "scale", "head_labels": [f"{scale:.4g}"] * self.n_head}

    def embed(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        return x + self.scale * self.encoding(positions, x.device, x.dtype)
