"""Classical label propagation of the benchmark: affine only and ANTs SyN on tiny phantoms."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from tiny_case import LABEL_IDS, make_case

from RRLMedSAMLib.bench.classical import QUICK_ANTS, affine_propagation
from RRLMedSAMLib.io.volumes import read_label, read_scan, same_grid
from RRLMedSAMLib.metrics.overlap import dice_per_label


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict:
    paths = make_case(tmp_path_factory.mktemp("bench_case"))
    return {
        "atlas_image": read_scan(paths["atlas_image"]), "atlas_label": read_label(paths["atlas_label"]),
        "scan": read_scan(paths["scan_a"]), "truth": read_label(paths["scan_a_label"]),
    }


def _mean_dice(label: sitk.Image, truth: sitk.Image) -> float:
    scores = dice_per_label(sitk.GetArrayFromImage(label), sitk.GetArrayFromImage(truth), LABEL_IDS)
    return float(np.mean(list(scores.values())))


def test_affine_propagation_lands_on_the_scan_grid(case: dict) -> None:
    result = affine_propagation(case["atlas_image"], case["atlas_label"], case["scan"], 32, 20, 0)
    assert same_grid(result.label, case["scan"])
    assert result.folding_fraction == 0.0
    assert _mean_dice(result.label, case["truth"]) > 0.6


def test_ants_image_conversion_keeps_geometry(case: dict) -> None:
    pytest.importorskip("ants")
    from RRLMedSAMLib.bench.classical import ants_to_sitk, sitk_to_ants

    image = case["scan"]
    back = ants_to_sitk(sitk_to_ants(image))
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image), atol=1e-5)


def test_ants_syn_propagation_beats_affine_and_does_not_fold(case: dict) -> None:
    pytest.importorskip("ants")
    from RRLMedSAMLib.bench.classical import ants_syn_propagation

    syn = ants_syn_propagation(case["atlas_image"], case["atlas_label"], case["scan"], QUICK_ANTS, seed=0)
    affine = affine_propagation(case["atlas_image"], case["atlas_label"], case["scan"], 32, 20, 0)
    assert same_grid(syn.label, case["scan"])
    assert syn.label.GetPixelID() == case["atlas_label"].GetPixelID()
    assert set(np.unique(sitk.GetArrayFromImage(syn.label))) <= {0, *LABEL_IDS}
    assert _mean_dice(syn.label, case["truth"]) > max(0.8, _mean_dice(affine.label, case["truth"]))
    assert 0.0 <= syn.folding_fraction < 0.01
