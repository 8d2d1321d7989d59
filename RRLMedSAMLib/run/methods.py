"""The method registry: what each ``--method`` trains, which stages run, and how ``segment`` predicts.

Three families share the run folder, the progress protocol and the segment outputs:

* ``plain`` - registration network, pseudo labels, plain segmentation network (no SAM).
* ``rrl`` (RRL-MedSAM) and its ablations - a general encoder distilled from the SAM teacher
  (DSKD stage 1 and 2), a medical encoder shared by the registration decoder and the
  auto-prompting (AP) decoder, mutual-EMA between the two encoders. ``segment`` registers with the
  medical registration network, predicts the prompt mask with the general branch and the final
  segmentation with the AP decoder prompted by it.
* ``autosam`` - the published baseline: frozen SAM encoder + a prompt-free head trained on the
  atlas alone; its registration outputs come from the affine pre-alignment only.

The training functions (``training/trainer.py``) and predictors (``inference/predictors.py``)
are looked up by :attr:`Method.family`.
"""

from __future__ import annotations

from dataclasses import dataclass

from RRLMedSAMLib.errors import InputError


@dataclass(frozen=True)
class Method:
    """One ``--method``.

    Attributes:
        name: the command-line name.
        family: ``plain``, ``rrl`` or ``autosam``.
        summary: one line for ``--help`` and reports.
        distill: DSKD (stage 1 and the stage-2 term) when a teacher is available.
        ema: mutual-EMA after every stage-2 optimiser step.
        prompt: the AP decoder gets the general branch's mask (else its learned "no mask" embedding).
        head: AutoSAM head kind (``vit``, ``cnn``, ``linear``), ``None`` otherwise.
    """

    name: str
    family: str
    summary: str
    distill: bool = False
    ema: bool = False
    prompt: bool = False
    head: str | None = None

    @property
    def needs_teacher(self) -> bool:
        """AutoSAM cannot run without the SAM encoder."""
        return self.family == "autosam"

    @property
    def uses_teacher(self) -> bool:
        """Whether a teacher, when available, is used at all."""
        return self.distill or self.needs_teacher


METHODS: dict[str, Method] = {
    "rrl": Method("rrl", "rrl", "RRL-MedSAM: DSKD from SAM, medical encoder, mutual-EMA, auto-prompting decoder",
                  distill=True, ema=True, prompt=True),
    "plain": Method("plain", "plain", "registration network + segmentation network on pseudo labels (no SAM)"),
    "rrl-no-distill": Method("rrl-no-distill", "rrl", "RRL-MedSAM without distillation", ema=True, prompt=True),
    "rrl-no-ema": Method("rrl-no-ema", "rrl", "RRL-MedSAM without mutual-EMA", distill=True, prompt=True),
    "rrl-no-prompt": Method("rrl-no-prompt", "rrl", "RRL-MedSAM without the prompt (AP decoder unprompted)",
                            distill=True, ema=True),
    "autosam-vit": Method("autosam-vit", "autosam", "AutoSAM: frozen SAM encoder + SAM mask decoder head", head="vit"),
    "autosam-cnn": Method("autosam-cnn", "autosam", "AutoSAM: frozen SAM encoder + CNN head", head="cnn"),
    "autosam-linear": Method("autosam-linear", "autosam", "AutoSAM: frozen SAM encoder + linear head", head="linear"),
}
DEFAULT_METHOD = "rrl"


def get_method(name: str) -> Method:
    """The registered method ``name``; :class:`InputError` for unknown names."""
    if name not in METHODS:
        raise InputError(f"Unknown method {name!r}; choose one of {', '.join(METHODS)}.")
    return METHODS[name]
