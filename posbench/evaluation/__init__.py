"""Measuring a trained model: scoring a token array at many lengths (scoring.py), the intervals of every
number (stats.py), context use (context_use.py), `eval-extrapolate` (extrapolate.py) and the
attention-heads probe (heads.py)."""
