"""``--set KEY=VALUE``: values typed by the setting they name, split between the preset and the RRL settings."""

from __future__ import annotations

import pytest

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.run.set_options import OWN_FLAGS, parse_set_options, settable_keys


def test_values_take_the_type_of_their_setting() -> None:
    preset, rrl = parse_set_options(["registration_steps=5", "atlas_prior=off", "channels=4,8,8", "ema_alpha=0.9",
                                     "distill_loss=l1", "pretrain_continues_optimizer=on"])
    assert preset == {"registration_steps": 5, "atlas_prior": False, "channels": (4, 8, 8)}
    assert rrl == {"ema_alpha": 0.9, "distill_loss": "l1", "pretrain_continues_optimizer": True}
    assert type(rrl["ema_alpha"]) is float and type(preset["registration_steps"]) is int


def test_settings_with_a_flag_of_their_own_are_not_settable() -> None:
    assert not OWN_FLAGS & set(settable_keys())
    assert {"registration_steps", "joint_steps", "atlas_prior", "smoothness_weight"} <= set(settable_keys())
    with pytest.raises(InputError, match="--sam-checkpoint"):
        parse_set_options(["sam_checkpoint=x.pth"])


@pytest.mark.parametrize("pair, fragment", [("grid_size=-1", "0 or more"), ("grid_size=big", "a value like 64"),
                                            ("nonsense=1", "unknown setting"), ("=3", "KEY=VALUE")])
def test_bad_pairs_are_refused_with_what_to_fix(pair: str, fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        parse_set_options([pair])
