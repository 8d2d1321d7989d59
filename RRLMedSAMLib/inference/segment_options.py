"""How ``segment`` applies a trained run: one set of options with one set of defaults.

The command line (``segment``, ``demo``), the Python library and the Slicer module all start from
:class:`SegmentOptions`' defaults, so a scan segmented any of these ways gets the same result.
The defaults follow the add-on table of ``docs/benchmarks.md`` (held-out scans of both
benchmark datasets): an add-on is on by default only where it helped there.
"""

from __future__ import annotations

from dataclasses import dataclass

from RRLMedSAMLib.inference.label_smoothing import AUTO, LabelSmoothing


@dataclass(frozen=True)
class SegmentOptions:
    """Options of one ``segment``.

    Attributes:
        refinement_steps: iterations per level of the MIND-SSC fine registration stage, which then
            replaces the preset's fine-grid NCC pass; ``None`` = the run's preset (that pass in
            every user preset), 0 = neither (the working-grid registration alone).
        label_smoothing_mm: volume-keeping smoothing of each final structure: a Gaussian sigma in
            mm (0 = off) or ``"auto"`` (until no rougher than in the atlas label).
        registration_ensemble: registrations from slightly moved starts whose warped atlas labels
            are voted (1 = off; each extra member costs one registration).
        volume_calibration: extrapolate each structure's size change by the run's measured
            under-recovery (runs trained with ``--volume-calibration on`` only).
    """

    refinement_steps: int | None = None
    label_smoothing_mm: LabelSmoothing = AUTO
    registration_ensemble: int = 1
    volume_calibration: bool = False

    def problems(self) -> list[str]:
        """What is wrong with these options, one sentence each (empty when they are valid)."""
        found = []
        if self.refinement_steps is not None and self.refinement_steps < 0:
            found.append(f"refinement steps must be 0 or more, not {self.refinement_steps}")
        if self.registration_ensemble < 1:
            found.append(f"a registration ensemble needs at least one member, not {self.registration_ensemble}")
        if self.label_smoothing_mm != AUTO and (not isinstance(self.label_smoothing_mm, (int, float))
                                                or self.label_smoothing_mm < 0):
            found.append(f"label smoothing must be 'auto' or a sigma of 0 mm or more, not {self.label_smoothing_mm!r}")
        return found

    def check(self) -> None:
        """Raise :class:`ValueError` naming every problem of these options."""
        found = self.problems()
        if found:
            raise ValueError("; ".join(found))


#: The settings the benchmark compares methods with: every add-on off, so a method's score is its own.
BARE = SegmentOptions(label_smoothing_mm=0.0, registration_ensemble=1, volume_calibration=False)
