"""Run by test_ddp under torchrun: `posbench train` with rank 1's clock running 3x fast.

Under --minutes, a rank that kept its own clock would stop before the others, which would then
wait for it in the next all-reduce forever; the shared clock makes every rank stop at one step.
"""

import os
import sys
import time
import types

import posbench.train
from posbench.cli import main

if os.environ["RANK"] == "1":
    posbench.train.time = types.SimpleNamespace(perf_counter=lambda: 3 * time.perf_counter())
sys.argv = ["posbench", *sys.argv[1:]]
main()
