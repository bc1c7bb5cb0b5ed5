"""The model: GPT (gpt.py, read top to bottom), the one attention function with its fast paths
(attention.py, biased_attention.py, flex.py) and data-dependent decay as a key channel (decay.py).
Where each token sits comes from a position method (posbench/positions/)."""
