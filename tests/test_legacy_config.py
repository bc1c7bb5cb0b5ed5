"""Legacy run folders (trained before the methods followed their reference code: config.json without
the settings added for that) keep loading and evaluating exactly as they were trained:
RunConfig.from_json (through ModelConfig.from_dict) gives them their legacy variant."""

import math
from dataclasses import asdict

import pytest

from posbench import GPT
from posbench.runs.config import RunConfig, TrainConfig

OLD_MODEL = dict(vocab_size=64, n_layer=1, n_head=4, d_model=32, max_len=64, tie_embeddings=True, dropout=0.0,
                 mlp_ratio=4)  # a legacy config.json "model" (and max_len, not train_len)
# what a new run's config.json holds for those settings: the reference variants
NEW_RUN = dict(embed_norm=None, sinusoid_ratio=0.5**0.5, t5_max_distance=None, fire_init_L=512.0, softplus_params=False)


def identity(raw: dict) -> dict:
    return RunConfig.from_json(raw).identity()


@pytest.mark.parametrize("pos, legacy_keys, label", [
    ("sinusoidal", set(), "sinusoidal+sinusoid_ratio=1"),
    ("scaled-sinusoidal", {"pos.scale"}, "scaled-sinusoidal+noln"),
    ("t5", {"pos.bias.weight"}, "t5+t5_max_distance=128"),
    ("fire", {"pos.c_raw", "pos.L_multiplier"}, "fire+fire_init_L=L+softplus_params"),
    ("kerple", {"pos.r1_raw", "pos.r2_raw"}, "kerple+softplus_params"),
    ("alibi", set(), "alibi"),
])
def test_an_old_config_builds_the_old_variant(pos, legacy_keys, label):
    for with_embed_norm in (True, False):  # embed_norm itself is older than the reference variants, or absent
        values = {**OLD_MODEL, "pos": pos, **({"embed_norm": False} if with_embed_norm else {})}
        config = RunConfig.from_json({"model": values}).model
        model = GPT(config)
        assert config.label() == label
        assert model.ln_e is None and "ln_e.weight" not in model.state_dict()
        assert {k for k in model.state_dict() if k.startswith("pos.") and "mlp" not in k} == legacy_keys
    old = model.pos
    if pos == "sinusoidal":  # PE RMS equal to the token std, 1:1
        assert old.amplitude / math.sqrt(2) == pytest.approx(0.02)
    if pos == "t5":
        assert old.max_distance == 128
    if pos == "fire":
        assert old.init_L == 64.0 and old.c.item() == pytest.approx(0.1)
    if pos == "kerple":
        assert old.r1.min().item() >= 0.01 and old.r1_raw.requires_grad
    fresh = RunConfig.from_json({"model": {**OLD_MODEL, "pos": pos, **NEW_RUN}}).model  # a new run of the same shape
    assert fresh.label() == pos
    if label == pos:  # nothing changed for this method: the old run is the new config (compare reuses it)
        assert config == fresh


def test_an_old_run_folder_is_the_same_run_for_resume_and_reuse():
    """`train --resume` and compare rebuild the config through from_dict: train's identity check must
    see the old config.json (without the new keys) as that same run, not as a different config."""
    old = {"model": {**OLD_MODEL, "pos": "kerple"}, "train": {"seq_len": 64}, "data": {"name": "x"}}
    rebuilt = RunConfig.from_json(old).to_json()
    assert identity(old) == identity(rebuilt)
    reference = {**rebuilt, "model": {**rebuilt["model"], **NEW_RUN}}  # another variant
    assert identity(old) != identity(reference)


def test_a_config_written_before_random_positions_is_the_same_run_and_reads_as_off():
    old_train = {k: v for k, v in asdict(TrainConfig()).items() if k != "random_positions"}
    assert TrainConfig.from_dict(old_train).random_positions is None
    old = {"model": {**OLD_MODEL, "pos": "alibi"}, "train": old_train, "data": {"name": "x"}}
    rebuilt = {**old, "train": asdict(TrainConfig.from_dict(old_train))}  # what `train --resume` writes
    assert "random_positions" in rebuilt["train"] and identity(old) == identity(rebuilt)
    assert identity(old) != identity({**old, "train": {**old_train, "random_positions": 64}})
