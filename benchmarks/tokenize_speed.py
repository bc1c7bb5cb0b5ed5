"""Data-path throughput at paper scale: tokenizer training, encoding (MB/s), the token cache, and the
training loader's batches/s against what a GPU run of the `paper` preset consumes.

    python benchmarks/tokenize_speed.py [--wikitext2 DIR] [--mb 100] [--vocab-size 16384] [--batches 3000]

The corpus is WikiText-2's train.txt repeated to about --mb megabytes in a temporary folder (the folder,
its token cache and everything else are deleted at the end; nothing is written into the repository).
WikiText-2 comes from --wikitext2, else $POSBENCH_WIKITEXT2, else ../shared/data/wikitext-2 next to the repo.

Requirement: the loader's CPU-side work alone must run at >= 50x the training step rate of the
`paper` preset (16 layers, d=1024, batch 32 x 512). That rate is an estimate, not a measurement: about
2.3e13 FLOP per step (6 * 218M params * 16,384 tokens, plus attention), i.e. ~10 steps/s on one H100 at
~23% of its dense bf16 peak (--steps-per-s changes it). So the loader needs >= 500 batches/s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from posbench.common import SPLITS
from posbench.data.corpora import load_corpus
from posbench.data.tokenizer import WORD_PATH_MAX_THREADS, _threads, train_tokenizer
from posbench.data.tokens import BatchSampler, prepare_data
from posbench.experiments.presets import CORPUS_PRESETS

REPO = Path(__file__).resolve().parent.parent


def paper_flops_per_step() -> float:
    """Training FLOPs of one `paper` step: 6 * params * tokens + attention (12 * layers * d * T per token)."""
    p = CORPUS_PRESETS["paper"]
    layers, d = p.model["n_layer"], p.model["d_model"]
    seq, batch, vocab = p.train["train_len"], p.train["batch_size"], p.train["vocab_size"]
    params = 12 * layers * d * d + vocab * d
    tokens = seq * batch
    return 6 * params * tokens + 12 * layers * d * seq * tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wikitext2", type=Path, default=None, help="folder holding WikiText-2's train.txt")
    ap.add_argument("--mb", type=float, default=100, help="size of the generated corpus, in MB")
    ap.add_argument("--vocab-size", type=int, default=CORPUS_PRESETS["paper"].train["vocab_size"])
    ap.add_argument("--batches", type=int, default=3000, help="loader batches to time")
    ap.add_argument("--steps-per-s", type=float, default=10.0, help="assumed GPU step rate of the paper preset")
    args = ap.parse_args()

    source = args.wikitext2 or Path(os.environ.get("POSBENCH_WIKITEXT2") or REPO.parent / "shared/data/wikitext-2")
    train_txt = source / "train.txt"
    if not train_txt.exists():
        raise SystemExit(f"no {train_txt}: pass --wikitext2 DIR or set POSBENCH_WIKITEXT2")
    seed_text = train_txt.read_bytes()
    copies = max(1, round(args.mb * 1e6 / len(seed_text)))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cpus} usable cores, load average {os.getloadavg()[0]:.1f} (a shared machine is noisy)")

    with tempfile.TemporaryDirectory(prefix="posbench-tokspeed-") as tmp:
        os.environ["POSBENCH_CACHE"] = str(Path(tmp) / "cache")  # a private token cache, deleted below
        corpus_path = Path(tmp) / "corpus.txt"
        with open(corpus_path, "wb") as f:
            for _ in range(copies):
                f.write(seed_text)
        size = corpus_path.stat().st_size
        print(f"corpus: {copies} x {train_txt} = {size / 1e6:.1f} MB")

        t = time.perf_counter()
        corpus = load_corpus(str(corpus_path))
        t_load = time.perf_counter() - t
        print(f"load + split + sha256:     {t_load:6.1f} s   ({size / 1e6 / t_load:6.1f} MB/s)")

        train = corpus.splits["train"]
        t = time.perf_counter()
        tok = train_tokenizer(train, "bpe", args.vocab_size, seed=0)
        t_train = time.perf_counter() - t
        print(f"train BPE {args.vocab_size} (sampled):   {t_train:6.1f} s   on {len(train.encode()) / 1e6:.1f} MB of "
              "train text (one thread, by design: the same merges everywhere)")

        total_bytes, total_tokens = 0, 0
        t = time.perf_counter()
        with open(Path(tmp) / "ids.bin", "wb") as f:  # the loop prepare_data runs, chunk by chunk
            for s in SPLITS:
                for ids in tok.encode_chunks(corpus.splits[s]):
                    f.write(ids.astype(np.uint16).tobytes())
                    total_tokens += ids.size
                total_bytes += corpus.description["bytes"][s]
        t_encode = time.perf_counter() - t
        path = "distinct words" if _threads() <= WORD_PATH_MAX_THREADS else "whole lines"
        print(f"encode BPE + write uint16: {t_encode:6.1f} s   ({total_bytes / 1e6 / t_encode:6.2f} MB/s, "
              f"{total_tokens / t_encode / 1e6:.2f}M tokens/s, {total_bytes / total_tokens:.2f} bytes/token; "
              f"sentencepiece on {path}, {_threads()} threads)")

        t = time.perf_counter()
        prepare_data(str(corpus_path), "bytes")
        t_bytes = time.perf_counter() - t
        print(f"prepare_data bytes:        {t_bytes:6.1f} s   ({size / 1e6 / t_bytes:6.1f} MB/s, "
              "load + hash + encode + write)")
        t = time.perf_counter()
        data = prepare_data(str(corpus_path), "bytes")
        t_hit = time.perf_counter() - t
        print(f"prepare_data, cache hit:   {t_hit:6.1f} s   (what every later run on this corpus pays)")

        p = CORPUS_PRESETS["paper"].train
        tokens = data.splits["train"]  # memory-mapped, as in training
        sampler = BatchSampler(tokens, p["train_len"], p["batch_size"], seed=0)
        for _ in range(50):
            sampler.next_batch()
        t = time.perf_counter()
        for _ in range(args.batches):
            sampler.next_batch()
        rate = args.batches / (time.perf_counter() - t)
        need = 50 * args.steps_per_s
        flops = paper_flops_per_step()
        print(f"loader (batch {p['batch_size']} x {p['train_len']}, memmap): {rate:,.0f} batches/s")
        print(f"paper preset: ~{flops:.2e} FLOP/step; assumed {args.steps_per_s:g} steps/s on an H100 "
              f"(an estimate: {flops * args.steps_per_s / 1e12:.0f} TFLOP/s, ~{flops * args.steps_per_s / 989e12:.0%} "
              "of dense bf16 peak)")
        verdict = "ok" if rate >= need else "too slow"
        print(f"requirement: >= 50 x {args.steps_per_s:g} = {need:,.0f} batches/s; measured {rate / need:.1f}x "
              f"that: {verdict}")
        del data, tokens, sampler  # release the memmap before the folder goes


if __name__ == "__main__":
    main()
