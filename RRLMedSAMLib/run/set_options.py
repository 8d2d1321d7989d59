"""``--set KEY=VALUE``: the method's research settings, reached by name from the command line.

Every field of :class:`~RRLMedSAMLib.run.presets.Preset` (stage lengths, grids, losses, the fine
registration stage) and of :class:`~RRLMedSAMLib.run.rrl_settings.RRLSettings` (distillation,
mutual-EMA, the SAM slices) can be set this way, except those with a flag of their own. Values
take the type of the field's default: integers, numbers, ``on``/``off`` (also ``true``/``false``)
and comma-separated lists. Whatever is set is recorded in the run's ``config.json``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.run.presets import PRESETS, Preset
from RRLMedSAMLib.run.rrl_settings import RRLSettings, get_rrl_settings

#: Fields that have their own command-line flag (``--preset``, ``--teacher``, ``--sam-checkpoint``...).
OWN_FLAGS = frozenset({"name", "teacher", "sam_checkpoint", "allow_custom_weights", "weights_dir", "distill_images"})
_TRUE, _FALSE = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def _defaults() -> dict[str, tuple[str, object]]:
    """``{key: (where, default value)}``, where is ``"preset"`` or ``"rrl"``."""
    keys: dict[str, tuple[str, object]] = {}
    preset, settings = PRESETS["fast"], get_rrl_settings("fast")
    for where, instance, cls in (("preset", preset, Preset), ("rrl", settings, RRLSettings)):
        for item in fields(cls):
            if item.name not in OWN_FLAGS:
                keys[item.name] = (where, getattr(instance, item.name))
    return keys


def settable_keys() -> list[str]:
    """Every key ``--set`` accepts, sorted."""
    return sorted(_defaults())


def _parse_value(key: str, text: str, default: object) -> object:
    """``text`` as the type of ``default``; raises ``ValueError`` with what was expected."""
    text = text.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError("on or off")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, tuple):
        return tuple(int(part) for part in text.split(","))
    return text


def parse_set_options(pairs: Iterable[str]) -> tuple[dict, dict]:
    """``KEY=VALUE`` pairs -> ``(preset overrides, RRL settings overrides)``, typed; :class:`InputError` if bad."""
    known = _defaults()
    preset: dict = {}
    rrl: dict = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set takes KEY=VALUE, e.g. --set registration_steps=100 (got {pair!r}).")
        if key in OWN_FLAGS:
            raise InputError(f"--set {key}: use its own flag --{key.replace('_', '-')} instead.")
        if key not in known:
            raise InputError(f"--set {key}: unknown setting; settable are: {', '.join(settable_keys())}.")
        where, default = known[key]
        try:
            value = _parse_value(key, text, default)
        except ValueError as error:
            expected = str(error) if str(error) == "on or off" else f"a value like {default!r}"
            raise InputError(f"--set {key}={text}: expected {expected}.") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise InputError(f"--set {key} must be 0 or more, not {value}.")
        (preset if where == "preset" else rrl)[key] = value
    return preset, rrl
