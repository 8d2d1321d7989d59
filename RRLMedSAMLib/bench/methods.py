"""The benchmark's methods, by name.

Three kinds:

``classical``  runs in :mod:`RRLMedSAMLib.bench.classical` (no training): ``affine`` (the engine's
               affine pre-alignment alone), ``ants-syn`` (single-atlas ANTs SyN label
               propagation, the tool a clinician would otherwise use; the reference of every
               ratio) and ``ants-synquick`` (a second ANTs flavour: antspyx's recreation of
               ``antsRegistrationSyNQuick.sh`` with SyN, i.e. rigid + affine + SyN on mutual
               information, on its own fixed schedule: ``--ants-iterations`` and ``--quick`` do
               not shorten it; about as fast as ``ants-syn`` on the tests' phantom). ANTs'
               ``SyNCC`` recipe is not registered: its fixed 2100x1200x1200x20 schedule took 200 s
               on that 30x40x36-voxel phantom (``ants-syn``: about 1 s).
``engine``     trained with ``rrlmedsam train --method NAME`` and applied with ``segment``.
``derived``    read from another method's segment outputs: ``registration-only`` is the atlas
               label warped by the engine's registration (``warped_atlas_label``) of the ``plain``
               run, so it costs no extra training; its times and memory are those of that run.

Engine methods other than ``plain`` need an engine whose training accepts a method (a ``method``
field on :class:`~RRLMedSAMLib.training.trainer.TrainRequest`); the list is data, so a new
engine method is benchmarked by adding one line here.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

from RRLMedSAMLib.errors import InputError


@dataclass(frozen=True)
class MethodSpec:
    """One benchmark method.

    Attributes:
        name: the name used on the command line and in every table.
        kind: ``classical``, ``engine`` or ``derived``.
        description: one line for tables and reports.
        source: for ``derived`` methods, the engine method whose outputs they read.
        needs: an importable module the method requires (e.g. ``ants`` from antspyx).
        ants_transform: for ANTs methods, the ``type_of_transform`` of ``ants.registration``
            (``None``: the run's :class:`~RRLMedSAMLib.bench.classical.AntsSettings` as given).
    """

    name: str
    kind: str
    description: str
    source: str | None = None
    needs: str | None = None
    ants_transform: str | None = None


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("affine", "classical", "affine pre-alignment only (SimpleITK, mutual information)"),
        MethodSpec("ants-syn", "classical", "single-atlas ANTs SyN label propagation (antspyx)", needs="ants"),
        MethodSpec("ants-synquick", "classical",
                   "single-atlas ANTs antsRegistrationSyNQuick[s] label propagation (antspyx, fixed schedule)",
                   needs="ants", ants_transform="antsRegistrationSyNQuick[s]"),
        MethodSpec("registration-only", "derived", "engine registration network: warped atlas label", source="plain"),
        MethodSpec("plain", "engine", "engine without SAM guidance: registration + segmentation on pseudo labels"),
        MethodSpec("rrl", "engine", "full RRL-MedSAM (distillation, mutual-EMA, auto-prompting decoder)"),
        MethodSpec("rrl-no-distill", "engine", "RRL-MedSAM ablation: no SAM feature distillation"),
        MethodSpec("rrl-no-ema", "engine", "RRL-MedSAM ablation: no mutual-EMA"),
        MethodSpec("rrl-no-prompt", "engine", "RRL-MedSAM ablation: no auto-prompting decoder"),
        MethodSpec("autosam-vit", "engine", "AutoSAM baseline: frozen SAM encoder + ViT head"),
        MethodSpec("autosam-cnn", "engine", "AutoSAM baseline: frozen SAM encoder + CNN head"),
        MethodSpec("autosam-linear", "engine", "AutoSAM baseline: frozen SAM encoder + linear head"),
    )
}

#: The reference every ratio is computed against.
REFERENCE_METHOD = "ants-syn"


def engine_accepts_methods() -> bool:
    """Whether this engine's training takes a method name (``TrainRequest.method``)."""
    from RRLMedSAMLib.training.trainer import TrainRequest

    return any(f.name == "method" for f in dataclasses.fields(TrainRequest))


def available(spec: MethodSpec) -> str | None:
    """``None`` when ``spec`` can run here, else the reason it cannot."""
    if spec.needs and importlib.util.find_spec(spec.needs) is None:
        return f"needs the Python module {spec.needs!r} (pip install antspyx, or the engine's 'bench' extra)"
    if spec.kind == "engine" and spec.name != "plain" and not engine_accepts_methods():
        return "this engine version trains only the 'plain' method"
    return None


def default_methods() -> list[str]:
    """Every registered method that can run here, in registry order."""
    return [name for name, spec in METHODS.items() if available(spec) is None]


def resolve_methods(names: Sequence[str] | None) -> list[MethodSpec]:
    """The specs for ``names`` (default: :func:`default_methods`), each checked to be runnable.

    A derived method's source is run too (added before it when not asked for); duplicates are
    dropped. Unknown or unavailable names raise :class:`InputError`.
    """
    chosen = list(names) if names else default_methods()
    unknown = [n for n in chosen if n not in METHODS]
    if unknown:
        raise InputError(f"Unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}.")
    ordered: list[str] = []
    for name in chosen:
        source = METHODS[name].source
        if source and source not in ordered:
            ordered.append(source)
        if name not in ordered:
            ordered.append(name)
    for name in ordered:
        reason = available(METHODS[name])
        if reason:
            raise InputError(f"Method {name!r} cannot run here: {reason}. Leave it out of --methods.")
    return [METHODS[n] for n in ordered]
