"""Shared fixtures for the Slicer-side tests (``slicer-core`` wheel: real MRML, no Qt)."""

from __future__ import annotations

import pytest
from slicer_test_helpers import require_slicer, slicer

_RULES_REGISTERED = False


def _register_segmentation_converters() -> None:
    """Do what Slicer's Segmentations module does at start-up: register the conversion rules."""
    global _RULES_REGISTERED
    if _RULES_REGISTERED:
        return
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    for rule in (
        slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
        slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
        slicer.vtkClosedSurfaceToFractionalLabelmapConversionRule,
        slicer.vtkFractionalLabelmapToClosedSurfaceConversionRule,
    ):
        factory.RegisterConverterRule(rule())
    _RULES_REGISTERED = True


@pytest.fixture
def scene():
    """A fresh MRML scene assigned to ``slicer.mrmlScene``."""
    require_slicer()
    _register_segmentation_converters()
    mrml_scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = mrml_scene
    yield mrml_scene
    mrml_scene.Clear(True)
