"""Mutation check: plant one small bug at a time in a copy of posbench and see whether the tests catch it.

    python benchmarks/mutation_check.py             # every mutant, each against the test files it names
    python benchmarks/mutation_check.py --full      # each against the whole suite (slower)
    python benchmarks/mutation_check.py -k t5       # only mutants whose name contains "t5"

Each mutant replaces one exact snippet of one file (the check stops if a snippet is no longer found, so
the list cannot silently go stale). The copy lives in a temporary folder; the working tree is never
touched. A mutant is *caught* when pytest fails on it; a survivor is a bug the suite cannot see. Run by
hand (not in CI): the list takes a few minutes on 2 cores, since pytest stops at the first failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # under posbench/
    original: str  # exact text, found exactly once
    mutated: str
    tests: tuple[str, ...]  # the test files that should catch it (the whole suite with --full)


P, M, T, R = "tests/test_positions.py", "tests/test_model.py", "tests/test_train.py", "tests/test_resilience.py"
E, S, H = "tests/test_evaluate.py", "tests/test_sample.py", "tests/test_heads.py"
ST, RS, LK = "tests/test_stats.py", "tests/test_rope_scaling.py", "tests/test_lock.py"
REF = "tests/test_reference.py"
CV = "tests/test_coverage.py"
FX, BN = "tests/test_flex.py", "tests/test_bench.py"

N = "tests/test_methods_2025.py"
C = "tests/test_methods_content.py"
P2 = "tests/test_methods_part2.py"
MUTANTS = [
    # --- the 2024-2026 methods (tests/test_methods_2025.py)
    Mutant("decay: the key channel added instead of subtracted (c_j - r)", "model/decay.py",
           "term = (sums[:, :, -1:] - sums)", "term = (sums - sums[:, :, -1:])", (N,)),
    Mutant("decay: the query channel off by sqrt(D)", "model/decay.py",
           "math.sqrt(width)), widen(k, term)", "1.0), widen(k, term)", (N,)),
    Mutant("decay: the running sums restart in each cached pass", "model/decay.py",
           "return sums if carry is None else sums + carry", "return sums", (N, M)),
    Mutant("fox: gate without its bias", "positions/fox.py",
           "config.n_head, bias=True)", "config.n_head, bias=False)", (N,)),
    Mutant("fox: sigmoid instead of logsigmoid", "positions/fox.py",
           "F.logsigmoid(self.proj(x).float())", "torch.sigmoid(self.proj(x).float())", (N,)),
    Mutant("ssmax: n counts the query's keys from zero (log i)", "positions/ssmax.py",
           "seen = index + 1 if", "seen = index.clamp(min=1) if", (N,)),
    Mutant("ssmax: one s for every head", "positions/ssmax.py",
           "factor = self.s[:, None]", "factor = self.s[:1, None]", (N,)),
    Mutant("llama4: the floor's +1 left out", "positions/llama4_temperature.py",
           "torch.floor((index + 1) / self.floor_scale)", "torch.floor(index / self.floor_scale)", (N,)),
    Mutant("llama4: applied to RoPE layers too", "positions/llama4_temperature.py",
           "        if method.encodes_positions:\n            return q\n", "", (N,)),
    Mutant("local: window one key too wide", "positions/local.py",
           "return i - self.size + 1 if isinstance", "return i - self.size if isinstance", (N,)),
    Mutant("local: chunks end one key late", "positions/local.py",
           "return (i // self.size) * self.size", "return ((i + 1) // self.size) * self.size", (N,)),
    Mutant("attention: chunked queries start their keys one past their span", "model/attention.py",
           "first = 0 if pos.local is None else pos.local.first_key(offset + s)",
           "first = 0 if pos.local is None else pos.local.first_key(offset + s) + 1", (N,)),
    Mutant("hybrid: NoPE on the first of every four layers", "positions/hybrid.py",
           "if (i + 1) % every == 0", "if i % every == 0", (N,)),
    Mutant("p-rope: keeps the slowest frequencies instead of the fastest", "positions/p_rope.py",
           "< self.kept, inv_freq, 0.0)", ">= inv_freq.numel() - self.kept, inv_freq, 0.0)", (N,)),
    Mutant("dynamic ntk: exponent d / (d - 1)", "positions/rotary.py",
           "** (dim / (dim - 2))", "** (dim / (dim - 1))", (N,)),
    Mutant("dynamic ntk: applied below the training length too", "positions/rotary.py",
           "if self.dynamic is None or length <= self.dynamic[1]:", "if self.dynamic is None:", (N,)),
    Mutant("drope: drops one step late", "positions/drope.py",
           "progress >= self.drop_at", "progress > self.drop_at", (N,)),
    Mutant("drope: the drop is not restored from a checkpoint", "positions/drope.py",
           "self.dropped = int(self.dropped_at_step) >= 0", "self.dropped = False", (N,)),
    Mutant("temperature: applied after the decay's key channel (scales the decay too)", "model/gpt.py",
           "        if self.temperature is not None:\n            q = self.temperature(q, pos, k.size(2))\n"
           "        if sums is not None:\n            q, k, v = fold_decay(q, k, v, sums)",
           "        if sums is not None:\n            q, k, v = fold_decay(q, k, v, sums)\n"
           "        if self.temperature is not None:\n            q = self.temperature(q, pos, k.size(2))", (N,)),
    # --- sandwich, resonance, PoSE (tests/test_methods_part2.py)
    Mutant("sandwich: every head compressed alike (no 8h/H spread)", "positions/sandwich.py",
           "heads * 8 / self.n_head", "torch.ones_like(heads) * 8", (P2,)),
    Mutant("sandwich: the sum starts at k = 0 (a constant 1 more)", "positions/sandwich.py",
           "torch.arange(1, d // 2 + 1, dtype=torch.float32)", "torch.arange(0, d // 2, dtype=torch.float32)", (P2,)),
    Mutant("resonance: wavelengths left unrounded", "positions/resonance.py",
           "return 2 * math.pi / torch.round(2 * math.pi / inv_freq)", "return inv_freq", (P2,)),
    Mutant("resonance: angles p * theta, not periodic", "positions/resonance.py",
           "torch.remainder(positions[:, None].double(), wavelength[None, :].double()).float()",
           "positions[:, None].float()", (P2,)),
    Mutant("rope scaling: the method's adjustment skipped for rescaled frequencies", "positions/rope_scaling.py",
           "inv_freq = pos.adjust_frequencies(inv_freq)", "inv_freq = inv_freq", (P2, N)),
    Mutant("pose: the skip never reaches M - L", "positions/ids.py",
           "torch.randint(0, max_position - length + 1, (1,), generator=generator)",
           "torch.randint(0, max_position - length, (1,), generator=generator)", (P2,)),
    Mutant("pose: the first chunk up to half the window plus one", "positions/ids.py",
           "torch.randint(1, (length + 1) // 2 + 1, (1,), generator=generator)",
           "torch.randint(1, (length + 1) // 2 + 2, (1,), generator=generator)", (P2,)),
    Mutant("pose: both options accepted at once", "runs/config.py",
           "if self.random_positions is not None and self.pose is not None:", "if False:", (P2,)),
    Mutant("sandwich: d_h/2 not subtracted", "positions/sandwich.py",
           "(total - self.head_dim / 2)[None]", "total[None]", (P2,)),
    Mutant("resonance: wavelengths floored, not rounded", "positions/resonance.py",
           "return 2 * math.pi / torch.round(2 * math.pi / inv_freq)",
           "return 2 * math.pi / torch.floor(2 * math.pi / inv_freq)", (P2,)),
    Mutant("pose: the first chunk shifted too", "positions/ids.py", "ids[first:] += skip", "ids += skip", (P2,)),
    Mutant("pose: the same ids at every step", "positions/ids.py",
           "return pose_positions(length, self.max_position, self.generator)",
           "return pose_positions(length, self.max_position, torch.Generator().manual_seed(0))", (P2,)),
    Mutant("pose: the training samplers draw nothing", "positions/ids.py",
           "return None if pose is None else PoseDraw(", "return None if True else PoseDraw(", (P2,)),
    # --- selective copy, run config, jobs, bench
    Mutant("selective copy: the answer in reverse", "tasks/generators/selective_copy.py",
           "[SEP], content]", "[SEP], content[::-1]]", ("tests/test_retrieval_tasks.py",)),
    Mutant("run config: an old folder's seq_len not renamed", "runs/config.py",
           'RENAMES = {"model": {"max_len": "train_len"}, "train": {"seq_len": "train_len"}}',
           'RENAMES = {"model": {"max_len": "train_len"}}', (T, "tests/test_legacy_config.py")),
    Mutant("jobs: a failing job stops the others", "experiments/jobs.py",
           "    except Exception as e:  # one failing job", "    except ZeroDivisionError as e:  # one failing job",
           ("tests/test_jobs.py",)),
    Mutant("jobs: a worker's advances never reach the display", "experiments/jobs.py",
           "            progress.advance(tasks[task], args[0])", "            pass", ("tests/test_jobs.py",)),
    Mutant("jobs: a failed first stage handed to the second, side by side", "experiments/jobs.py",
           "if stage is work and then is not None and not isinstance(outcome, Exception):",
           "if stage is work and then is not None:", ("tests/test_jobs.py",)),
    Mutant("jobs: a failed first stage handed to the second, one at a time", "experiments/jobs.py",
           "            if then is not None and not isinstance(outcome, Exception):",
           "            if then is not None:", ("tests/test_jobs.py",)),
    Mutant("jobs: two by default even on one thread", "experiments/jobs.py",
           "torch.get_num_threads() >= 2 else 1", "True else 1", ("tests/test_jobs.py",)),
    Mutant("bench: the precision asked is not the one timed", "experiments/bench.py",
           "        with autocast(device, precision):\n            logits = model(x[:, :-1])",
           "        with autocast(device, \"fp32\"):\n            logits = model(x[:, :-1])", (BN,)),
    Mutant("context verdict: a run that cannot go past L read as using no context there", "experiments/verdicts.py",
           "    if not steps:  # e.g. a learned table", "    if False:  # e.g. a learned table",
           ("tests/test_context_use.py",)),
    Mutant("compare: a method missing a failed seed kept as a row of fewer seeds", "experiments/compare.py",
           "        if label not in failed:\n            for name",
           "        if not isinstance(outcomes[k], Exception):\n            for name", ("tests/test_compare.py",)),
    Mutant("tasks: the ranking's interval not clipped to what an MRR can be", "tasks/run.py",
           "[max(ci.low, 1 / len(labels)), min(ci.high, 1.0)]", "[ci.low, ci.high]",
           ("tests/test_retrieval_tasks.py",)),
    Mutant("corpora: the built-in corpus rebuilt on every load", "data/corpora.py",
           "@functools.cache\ndef _builtin", "def _builtin", ("tests/test_data.py",)),
    # --- the content-dependent methods (tests/test_methods_content.py)
    Mutant("cope: gates of keys the query may not see counted", "positions/cope.py",
           "gates = torch.sigmoid(scores.float()) * allowed", "gates = torch.sigmoid(scores.float())", (C, M)),
    Mutant("cope: positions counted from the first key, not back from the query", "positions/cope.py",
           "positions = gates.flip(-1).cumsum(-1).flip(-1).clamp(", "positions = gates.cumsum(-1).clamp(", (C,)),
    Mutant("cope: positions clamp one short of npos - 1", "positions/cope.py",
           "clamp(max=self.npos - 1)", "clamp(max=self.npos - 2)", (C,)),
    Mutant("cope: floor and ceil logits swapped in the interpolation", "positions/cope.py",
           "torch.lerp(low, high, positions - floor)", "torch.lerp(high, low, positions - floor)", (C,)),
    Mutant("cope: position logits not divided by sqrt(d_h)", "positions/cope.py",
           "float() / math.sqrt(self.head_dim)", "float()", (C,)),
    Mutant("cope: one table for all layers", "positions/cope.py",
           "return self.layers[layer]", "return self.layers[0]", (C,)),
    Mutant("stick-breaking: the query's own key breaks the stick too", "positions/stick_breaking.py",
           "log_rest = (-F.softplus(z)).masked_fill(own, 0.0)", "log_rest = -F.softplus(z)", (C,)),
    Mutant("stick-breaking: the product runs from the first key, not back from the query",
           "positions/stick_breaking.py", "through = log_rest.flip(-1).cumsum(-1).flip(-1)",
           "through = log_rest.cumsum(-1)", (C,)),
    Mutant("stick-breaking: key j breaks its own share (product over t >= j)", "positions/stick_breaking.py",
           "between = F.pad(through[..., 1:], (0, 1))", "between = through", (C,)),
    Mutant("stick-breaking: the remainder of the stick dropped", "positions/stick_breaking.py",
           "torch.where(own, through[..., :1], F.logsigmoid(z) + between)",
           "(F.logsigmoid(z) + between).masked_fill(own, -math.inf)", (C, H)),
    Mutant("attention: content methods take the fused kernels", "model/attention.py",
           "if visit is not None or pos.content_dependent:", "if visit is not None:", (C,)),
    Mutant("attention: the content bias left out", "model/attention.py",
           "scores + mask if bias is None else scores + bias + mask", "scores + mask", (C,)),
    Mutant("attention: the method's normaliser ignored (softmax)", "model/attention.py",
           "    return pos.attention_weights(scores", "    return PositionMethod.attention_weights(pos, scores", (C,)),
    Mutant("attention: explicit chunks joined in the order computed (widest first)", "model/attention.py",
           "join_query_chunks([out[s] for s in starts])", "join_query_chunks(list(out.values()))", (C,)),
    Mutant("attention: content hooks told every key is allowed", "model/attention.py",
           'allowed = mask != float("-inf")', "allowed = torch.ones_like(mask, dtype=torch.bool)", (C, M)),
    # --- positions/
    Mutant("alibi: bias sign flipped", "positions/alibi.py",
           "return -slopes * distance[None].float()", "return slopes * distance[None].float()", (P, REF)),
    Mutant("alibi: slope ratio 2^(-4/n) instead of 2^(-8/n)", "positions/alibi.py",
           "ratio = 2.0 ** (-8.0 / n)", "ratio = 2.0 ** (-4.0 / n)", (P, REF)),
    Mutant("bias by distance: queries at the keys' first positions (offset ignored)", "positions/base.py",
           "return position_distance(q_pos, k_pos, device)  # (q, k)",
           "return position_distance(k_pos.slice(0, len(q_pos)), k_pos, device)", (P, M)),
    Mutant("bias along diagonals: the queries' offset ignored", "positions/base.py",
           "first = q_pos.start - k_pos.end() + 1", "first = 1 - len(k_pos)", (P, M)),
    Mutant("bias along diagonals: rows in reverse order", "positions/base.py",
           "rows_last_first.flip(-2).contiguous()", "rows_last_first.contiguous()", (P, M)),
    Mutant("t5: distances shifted by one (0 and 1 share a bucket)", "positions/t5.py",
           "relative = -distance  #", "relative = -distance + 1  #", (P, REF)),
    Mutant("t5: log base of the far buckets off (max_distance / 2)", "positions/t5.py",
           "math.log(max_distance / max_exact)", "math.log(max_distance / max_exact / 2)", (P, REF)),
    Mutant("t5: exact buckets end one early", "positions/t5.py",
           "torch.where(distance < max_exact, distance, far)", "torch.where(distance < max_exact - 1, distance, far)",
           (P, REF)),
    Mutant("sinusoid: sin and cos swapped", "positions/base.py",
           "torch.stack((angles.sin(), angles.cos()), dim=-1)", "torch.stack((angles.cos(), angles.sin()), dim=-1)",
           (P, REF)),
    Mutant("sinusoid: natural log base instead of 10000", "positions/base.py",
           "inv_freq = 10000.0 ** (", "inv_freq = 2.718281828 ** (", (P, REF)),
    Mutant("relative_distance: j - i instead of i - j", "positions/base.py",
           "    return i - j\n", "    return j - i\n", (P, M, H)),
    Mutant("rotary: rotate_half sign flipped", "positions/rotary.py",
           "torch.cat((-sin, sin), -1)", "torch.cat((sin, -sin), -1)", (REF, P)),
    Mutant("rotary: cos and sin swapped", "positions/rotary.py",
           "cos, sin = angles.cos(), angles.sin()", "sin, cos = angles.cos(), angles.sin()", (REF, P)),
    Mutant("rotary: backward rotates the gradient forward, not back", "positions/rotary.py",
           "_rotate_halves(grad, cos, -signed_sin)", "_rotate_halves(grad, cos, signed_sin)", (REF,)),
    Mutant("rotary: second half of the output from the first half's tables", "positions/rotary.py",
           "(slice(h, None), x[..., h:], x[..., :h])", "(slice(None, h), x[..., h:], x[..., :h])", (REF, P)),
    Mutant("rotary: compiled path pairs each half with itself", "positions/rotary.py",
           "torch.cat((x2, x1), dim=-1), signed_sin)", "torch.cat((x1, x2), dim=-1), signed_sin)", (M,)),
    Mutant("rotary: ignores the offset start", "positions/rotary.py",
           "angles = self.angles(positions.tensor(device), inv_freq)",
           "angles = self.angles(positions.tensor(device) - positions.tensor(device)[0], inv_freq)", (P, M, S)),
    Mutant("xpos: keys scaled like queries", "positions/xpos.py",
           "cos * inverse, signed_sin * inverse", "cos * scale, signed_sin * scale", (P, REF)),
    Mutant("learned: off-by-one row for the offset", "positions/learned.py",
           "self.table.weight[positions.start : end]", "self.table.weight[positions.start + 1 : end + 1]", (P, M, S)),
    Mutant("kerple: log1p replaced by log", "positions/kerple.py",
           "torch.log1p(self.r2.view(shape) * d)", "torch.log(self.r2.view(shape) * d + 1e-6)", (P, REF)),
    Mutant("fire: normaliser ignores the threshold", "positions/fire.py",
           "torch.maximum(query, self.threshold)", "query", (P, REF)),
    Mutant("yarn: attention factor 0.01 ln s + 1 instead of 0.1", "positions/rope_scaling.py",
           "return 0.1 * math.log(factor) + 1.0", "return 0.01 * math.log(factor) + 1.0", (REF, RS)),
    Mutant("yarn: ramp ceil/floor swapped (low ceiled)", "positions/rope_scaling.py",
           "low = max(math.floor(", "low = max(math.ceil(", (REF, RS)),
    Mutant("t5: table initialised at zero", "positions/t5.py",
           "std=config.d_model**-0.5)  # HF T5", "std=0.0)  # HF T5", (REF,)),
    Mutant("fire: a unit on at one end of a tile folded in as on throughout", "positions/fire.py",
           "on = (ends >= 0).all(0)", "on = (ends >= 0).any(0)", (P, REF)),
    Mutant("fire: the units that switch inside a tile dropped", "positions/fire.py",
           "switching = ~on & (ends > 0).any(0)", "switching = ~on & (ends > 0).all(0)", (P, REF)),
    Mutant("common: large blocks still get mappings of their own", "common.py",
           " and bool(mallopt(M_MMAP_THRESHOLD, MAP_ABOVE))", "", (T,)),
    Mutant("train: CPU training leaves malloc's defaults", "train.py",
           "        keep_freed_memory()  # the steps reuse", "        pass  # the steps reuse", (T,)),
    # --- attention.py and model.py
    Mutant("model: CPU bf16 attention left in bf16 (the slow backward)", "model/gpt.py",
           'if qkv.device.type == "cpu" and torch.is_autocast_enabled("cpu"):', "if False:", (M,)),
    Mutant("model: CPU bf16 attention upcast but autocast left on (SDPA casts back)", "model/gpt.py",
           'with torch.autocast("cpu", enabled=False):\n                y = self.attend(qkv.float()',
           'with torch.autocast("cpu", enabled=True):\n                y = self.attend(qkv.float()', (M,)),
    Mutant("model: causal mask lets a query see the next key", "model/attention.py",
           "dtype=torch.bool, device=device).triu(1)", "dtype=torch.bool, device=device).triu(2)", (M, P)),
    Mutant("attention: chunked attention drops the chunk's offset", "model/attention.py",
           "qc_pos, kc_pos = q_pos.slice(s, qc.size(2)), k_pos.slice(first, k_len - first)",
           "qc_pos, kc_pos = q_pos.slice(0, qc.size(2)), k_pos.slice(first, k_len - first)", (M, E)),
    Mutant("attention: Hankel chunks read the mask one diagonal off", "model/biased_attention.py",
           "mask = hankel_mask(diagonal, s + Tk - keys, c, keys)",
           "mask = hankel_mask(diagonal, s + Tk - keys + 1, c, keys)",
           ("tests/test_attention.py",)),
    Mutant("attention: a learned bias's forward chunks see one key too few", "model/biased_attention.py",
           "        yield s, c, k_len - q_len + s + c", "        yield s, c, k_len - q_len + s + c - 1",
           ("tests/test_attention.py",)),
    Mutant("attention: per-diagonal forward reads the keys unreversed", "model/biased_attention.py",
           "functools.partial(hankel_chunk, k.flip(2), v.flip(2), diagonal)",
           "functools.partial(hankel_chunk, k, v.flip(2), diagonal)", ("tests/test_attention.py",)),
    Mutant("attention: Hankel vector lets a query see the next key", "model/attention.py",
           'masked_fill(n < q_len - 1, float("-inf"))', 'masked_fill(n < q_len - 2, float("-inf"))',
           ("tests/test_attention.py",)),
    Mutant("attention: biased backward forgets the row sum of dO * O", "model/biased_attention.py",
           "ds.sub_(delta[:, :, rows]).mul_(p)", "ds.mul_(p)", ("tests/test_attention.py",)),
    Mutant("attention: biased backward skips a block's last key", "model/biased_attention.py",
           "keys = Tk - Tq + e  # the block's", "keys = Tk - Tq + e - 1  # the block's", ("tests/test_attention.py",)),
    Mutant("attention: a later batch group's mask gradient overwrites the earlier ones", "model/biased_attention.py",
           "dmask[:, a:e, :keys] += grad", "dmask[:, a:e, :keys] = grad", ("tests/test_attention.py",)),
    Mutant("attention: the backward's batch groups skip the last element", "model/biased_attention.py",
           "for b in range(0, B, group):", "for b in range(0, B - 1, group):", ("tests/test_attention.py",)),
    Mutant("attention: per-diagonal backward reads each row's mask reversed", "model/biased_attention.py",
           ".unfold(-1, keys, 1).flip(1)", ".unfold(-1, keys, 1)", ("tests/test_attention.py",)),
    Mutant("attention: per-diagonal backward shears the mask gradient one column off", "model/biased_attention.py",
           "sheared.stride(1) - 1, 1), rows - 1)", "sheared.stride(1) - 1, 1), rows)",
           ("tests/test_attention.py",)),
    Mutant("attention: per-diagonal bias gradient returned in backwards order", "model/biased_attention.py",
           "None if grad is None else grad.flip(-1)", "None if grad is None else grad", ("tests/test_attention.py",)),
    Mutant("model: the probe's explicit attention drops the chunk's offset", "model/attention.py",
           "mask = causal_mask(pos, q_pos.slice(s, c), k_pos.slice(0, k_len), q.device, q.dtype)",
           "mask = causal_mask(pos, q_pos.slice(0, c), k_pos.slice(0, k_len), q.device, q.dtype)", (H,)),
    Mutant("model: residual of the MLP dropped", "model/gpt.py",
           "return x + self.mlp(self.ln_2(x))", "return self.mlp(self.ln_2(x))", (M, T)),
    Mutant("model: KV cache keeps only the newest keys", "model/gpt.py",
           "return tuple(buffer[:, :, :end] for buffer in buffers)", "return tensors", (S, M)),
    Mutant("model: KV cache loses the old keys when its buffers grow", "model/gpt.py",
           "new[:, :, :past] = old[:, :, :past]", "pass", (S, M)),
    Mutant("flex: per-distance vector read one diagonal off", "model/flex.py",
           "diagonal[h, i + last_key - j]", "diagonal[h, i + last_key - j - 1]", (FX,)),
    Mutant("flex: dense bias dropped", "model/flex.py",
           "score + bias[h, i, j]", "score + bias[h, i, j] * 0", (FX,)),
    # --- bench.py
    Mutant("bench: model FLOPs leave attention out", "experiments/bench.py",
           "+ 12 * c.n_layer * c.d_model * c.train_len", "+ 0 * c.n_layer * c.d_model * c.train_len", (BN,)),
    Mutant("bench: model FLOPs count the biases and norms", "experiments/bench.py",
           "model.blocks.parameters() if p.dim() == 2)", "model.blocks.parameters())", (BN,)),
    Mutant("bench: timed models alive while memory is measured", "experiments/bench.py",
           "    del nets  # every model freed", "    pass  # every model freed", (BN,)),
    # --- train.py and runs.py
    Mutant("train: resume does not restore the step", "runs/folder.py",
           'return state["step"], state["elapsed"]', 'return 0, state["elapsed"]', (T, R)),
    Mutant("runs: resume does not restore torch's RNG", "runs/folder.py",
           '    torch.set_rng_state(state["torch_rng"].cpu())\n', "", (T, R)),
    Mutant("runs: resume does not restore the optimizer", "runs/folder.py",
           '    optimizer.load_state_dict(state["optimizer"])\n', "", (T, R)),
    Mutant("runs: resume does not restore the data order", "runs/folder.py",
           '    sampler.load_state_dict(state["sampler"])\n', "", (T, R)),
    Mutant("runs: model.safetensors written as zeros", "runs/folder.py",
           "state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}",
           "state = {k: v.detach().cpu().contiguous() * 0 for k, v in model.state_dict().items()}", (T, R)),
    Mutant("train: Ctrl-C does not save", "train.py",
           "        except KeyboardInterrupt:\n            self.save()\n",
           "        except KeyboardInterrupt:\n            pass\n", (T, R)),
    Mutant("train: warmup one step short", "train.py",
           "return cfg.lr * (step + 1) / cfg.warmup", "return cfg.lr * step / cfg.warmup", (T,)),
    Mutant("train: gradients not clipped", "train.py",
           "torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.cfg.grad_clip)", "pass", (T,)),
    # --- scoring.py / evaluate.py
    Mutant("scoring: prefill chunks all start at position 0", "evaluation/scoring.py",
           "model(x[:, s : s + rows], start=s, cache=cache,", "model(x[:, s : s + rows], start=0, cache=cache,", (E,)),
    Mutant("scoring: bits per byte with log base e", "evaluation/scoring.py",
           "return loss / math.log(2) / bytes_per_token", "return loss / bytes_per_token", (E,)),
    Mutant("scoring: sliding windows score the overlap twice", "evaluation/scoring.py",
           "spans.append((max(0, new_end - length), new_end, end))",
           "spans.append((max(0, new_end - length), new_end, max(0, new_end - length)))", (E,)),
    Mutant("scoring: last target of each window dropped", "evaluation/scoring.py",
           "ids = torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(size + 1)], dtype=np.int64))",
           "ids = torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(size + 1)], dtype=np.int64))"
           "\n            ids[:, -1] = ids[:, -2]", (E,)),
    # --- stats.py
    Mutant("stats: t interval with the population std (ddof=0)", "evaluation/stats.py",
           "float(x.std(ddof=1))", "float(x.std(ddof=0))", (ST,)),
    Mutant("stats: t quantile one degree of freedom off", "evaluation/stats.py",
           "half = t_quantile(len(x) - 1)", "half = t_quantile(len(x))", (ST,)),
    Mutant("stats: paired ratio with the two sides' blocks unpaired", "evaluation/stats.py",
           "np.stack([za - zb for (_, za), (_, zb) in pairs])",
           "np.stack([za - zb[::-1] for (_, za), (_, zb) in pairs])", (ST, E)),
    Mutant("stats: windows, not blocks, as the unit", "evaluation/stats.py",
           "np.bincount(self.block, weights=a.astype(np.float64), minlength=k)",
           "np.bincount(np.arange(len(self.block)), weights=a.astype(np.float64))", (ST, CV)),
    Mutant("stats: over seeds, the t over seeds alone (the text's noise dropped)", "evaluation/stats.py",
           "block_var = float(residuals.mean(0).var(ddof=1)) / K", "block_var = 0.0 if S > 1 else "
           "float(residuals.mean(0).var(ddof=1)) / K", (ST, CV)),
    Mutant("stats: over seeds, the arithmetic mean of perplexity", "experiments/verdicts.py",
           '"ppl": _geometric_mean([r["ppl"] for r in rows])', '"ppl": _mean([r["ppl"] for r in rows])',
           ("tests/test_compare.py",)),
    Mutant("stats: a normal quantile in place of t (too narrow with few blocks)", "evaluation/stats.py",
           "return float(values.mean()), t_quantile(max(1.0, df)) * math.sqrt(total)",
           "return float(values.mean()), Z975 * math.sqrt(total)", (ST, CV)),
    Mutant("stats: tied values ranked by order, not averaged", "evaluation/stats.py",
           "return (first + (counts + 1) / 2)[inverse]", "return (first + 1)[inverse]", (H,)),
    Mutant("stats: Wilson interval with the normal approximation's centre", "evaluation/stats.py",
           "centre = (p + z2 / (2 * n)) / (1 + z2 / n)", "centre = p", ("tests/test_tasks.py",)),
    # --- scoring.py: which text is scored
    Mutant("scoring: the split's first blocks, not one in each stratum", "evaluation/scoring.py",
           "return edges[:-1] + (np.random.default_rng(seed).random(k) * room).astype(np.int64)",
           "return np.arange(k) * longest",
           (E, "tests/test_coverage_text.py")),
    # --- the house rules (tests/test_layout.py)
    Mutant("layout: a core module imports a workflow", "evaluation/scoring.py",
           "from .stats import Windows, bytes_before\n",
           "from .stats import Windows, bytes_before\nfrom ..experiments import presets  # noqa: F401\n",
           ("tests/test_layout.py",)),
    # --- run_groups.py
    Mutant("compare: runs with other tokenizers let through", "experiments/run_groups.py",
           "        if _tokenizer_digest(first) != _tokenizer_digest(run):", "        if False:",
           ("tests/test_compare_runs.py",)),
    Mutant("compare: runs grouped by method label alone", "experiments/run_groups.py",
           "key = repr(sorted(_flat(config).items()))", "key = config.label",
           ("tests/test_compare_runs.py",)),
    # --- task_data.py
    Mutant("tasks: passkey depth rounds U * filler (ends at half weight)", "tasks/generators/passkey.py",
           "before = int(rng.integers(0, filler + 1)) if depth is None", "before = int(round(rng.random() * filler)) "
           "if depth is None", ("tests/test_tasks.py",)),
    # --- lock.py
    Mutant("lock: a second writer is let in (no lock taken)", "runs/lock.py",
           "fcntl.flock(", "(lambda *a: None)(", (LK,)),
    # --- sample.py
    Mutant("sample: decoding feeds the token at the wrong position", "sample.py",
           "logits = model(token, start=cache.length, cache=cache)[:, -1]",
           "logits = model(token, start=cache.length - 1, cache=cache)[:, -1]", (S,)),
    Mutant("sample: top-k keeps one token too few", "sample.py",
           "logits.masked_fill(logits < kth,", "logits.masked_fill(logits <= kth,", (S,)),
    # --- heads.py
    Mutant("heads: span counts one key too many", "evaluation/heads.py",
           "out[name] = (query - j_star).clamp(min=0)", "out[name] = (query - j_star + 1).clamp(min=0)", (H,)),
    Mutant("heads: sink reads the last key instead of the first", "evaluation/heads.py",
           'out["sink"] = p[..., 0]', 'out["sink"] = p[..., -1]', (H,)),
]


def run_mutant(mutant: Mutant, full: bool) -> tuple[bool, float, str]:
    """(caught, seconds, last line of pytest's output) for one mutant, in a fresh copy of the project."""
    with tempfile.TemporaryDirectory(prefix="posbench-mutant-") as tmp:
        copy = Path(tmp)
        shutil.copytree(ROOT / "posbench", copy / "posbench", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", copy / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
        target = copy / "posbench" / mutant.file
        text = target.read_text()
        if text.count(mutant.original) != 1:
            raise SystemExit(f"mutant '{mutant.name}': the snippet is found {text.count(mutant.original)} times in "
                             f"posbench/{mutant.file}; update the mutant list")
        mutated = text.replace(mutant.original, mutant.mutated)
        compile(mutated, str(target), "exec")  # a mutant must be a bug, not a syntax error
        target.write_text(mutated)
        tests = ["tests"] if full else [t for t in mutant.tests if (copy / t).exists()]
        env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=copy, env=env, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        return proc.returncode != 0, time.perf_counter() - start, lines[-1] if lines else proc.stderr[-200:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="run the whole suite against every mutant")
    parser.add_argument("-k", default="", help="only mutants whose name contains this text")
    parser.add_argument("--start", type=int, default=1, help="begin at the mutant with this number (1-based)")
    args = parser.parse_args()
    chosen = [(n, m) for n, m in enumerate(MUTANTS, 1) if n >= args.start and args.k in m.name]
    survivors = []
    for n, mutant in chosen:
        caught, seconds, last = run_mutant(mutant, args.full)
        print(f"[{n:2d}/{len(MUTANTS)}] {'caught  ' if caught else 'SURVIVED'} {seconds:5.1f} s  {mutant.name}"
              + ("" if caught else f"  ({last})"), flush=True)
        if not caught:
            survivors.append(mutant.name)
    print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutants caught"
          + (f"; survived: {', '.join(survivors)}" if survivors else ""))
    sys.exit(1 if survivors else 0)


if __name__ == "__main__":
    main()
