"""Importing a custom SAM checkpoint (e.g. MedSAM) from the panel, and training with it through the real engine.

One full-size random SAM vit_b file in the official key layout is written per test run (the real
MedSAM file has that layout); its checksum is in no manifest, so the panel warns that it cannot be
verified, copies it into the weights folder and trains with ``--sam-checkpoint PATH --allow-custom-weights``.
"""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
from slicer_test_helpers import MODULE_DIR, REPO_ROOT, require_slicer, slicer

require_slicer()
torch = pytest.importorskip("torch")
sys.path.insert(0, str(REPO_ROOT / "Testing" / "engine"))

from safetensors.torch import save_file  # noqa: E402
from sam_official_layout import write_official_like_sam  # noqa: E402
from test_slicer_run_cycle_engine import ENGINE, scene_with_case, start, wait  # noqa: E402

from RRLMedSAMSlicerLib import CustomWeightsLogic as cw  # noqa: E402
from RRLMedSAMSlicerLib import RunsLogic as rl  # noqa: E402
from RRLMedSAMSlicerLib import WeightsLogic as wl  # noqa: E402
from RRLMedSAMSlicerLib.Logic import RRLMedSAMLogic  # noqa: E402

MANIFEST = REPO_ROOT / "Resources" / "models" / "sam_checkpoints.json"


@pytest.fixture(scope="module")
def medsam_like(tmp_path_factory):
    """The one full-size checkpoint of this test run."""
    path = tmp_path_factory.mktemp("download") / "medsam_vit_b.pth"
    write_official_like_sam(path, "vit_b", seed=3)
    return path


def sam_layout_keys(blocks: int) -> dict:
    keys = {f"image_encoder.blocks.{i}.attn.qkv.weight": torch.zeros(2) for i in range(blocks)}
    return keys | {"image_encoder.patch_embed.proj.weight": torch.zeros(2), "mask_decoder.iou_token.weight": torch.zeros(2)}


@pytest.mark.slow
def test_custom_checkpoint_is_imported_after_the_warning_and_trains_the_teacher(scene, tmp_path, medsam_like):
    entries = wl.load_manifest(MANIFEST)
    inspection = cw.inspect_checkpoint(medsam_like, entries)
    assert not inspection.verified and inspection.model_type == "vit_b"
    assert inspection.sha256 == hashlib.sha256(medsam_like.read_bytes()).hexdigest()
    assert inspection.size_bytes > 350e6, "a full-size vit_b checkpoint"
    warning = cw.custom_weights_warning(inspection)
    assert "cannot be verified" in warning and "medsam_vit_b.pth" in warning and inspection.sha256[:16] in warning

    weights = tmp_path / "weights"
    target = cw.import_inspected(inspection, weights, protected=[MODULE_DIR])
    assert target == weights / cw.CUSTOM_FOLDER / "medsam_vit_b.pth"
    assert wl.sha256_of(target) == inspection.sha256 and not list(target.parent.glob("*.part"))
    with pytest.raises(wl.WeightsError, match="install folder"):
        cw.import_inspected(inspection, MODULE_DIR / "weights", protected=[MODULE_DIR])
    assert cw.custom_checkpoint_from_setting(str(target)) == target  # what the panel keeps in its settings
    assert cw.custom_checkpoint_from_setting(str(tmp_path / "moved.pth")) is None
    assert "custom: medsam_vit_b.pth" in cw.custom_checkpoint_label(target)

    atlas, segmentation, scans = scene_with_case(scene)
    logic = RRLMedSAMLogic(scene, command=lambda: ENGINE)
    folder = rl.create_run(tmp_path / "runs", atlas.GetName())
    command = logic.train_command(folder, atlas, segmentation, scans, preset="tiny", device="cpu", sam_checkpoint=target)
    at = command.index("--sam-checkpoint")
    assert command[at:at + 3] == ["--sam-checkpoint", str(target), "--allow-custom-weights"]
    process, events = start(command)
    wait(process)
    teacher = json.loads((folder / "model" / "config.json").read_text())["teacher"]
    assert teacher["custom"] is True and teacher["label"] == f"custom:{inspection.sha256[:12]}"
    assert teacher["weights_sha256"] == inspection.sha256 and teacher["checkpoint"] == str(target.resolve())
    assert any(e.stage.startswith("distill") for e in events), "the custom teacher's features were distilled"
    assert process.outcome.succeeded, process.outcome.error_message
    assert teacher["model_type"] == "vit_b"
    assert rl.read_run(folder).status == rl.RunStatus.FINISHED


def test_file_formats_verified_import_and_refusals(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save(sam_layout_keys(24), legacy, _use_new_zipfile_serialization=False)
    assert cw.sam_model_type(cw.checkpoint_keys(legacy)) == "vit_l"
    tensors = tmp_path / "sam.safetensors"
    save_file(sam_layout_keys(32), str(tensors))
    assert cw.sam_model_type(cw.checkpoint_keys(tensors)) == "vit_h"

    official = tmp_path / "sam_vit_b_download.pth"
    torch.save(sam_layout_keys(12), official)
    checksum = hashlib.sha256(official.read_bytes()).hexdigest()
    entries = [wl.CheckpointEntry("sam_vit_b", "sam_vit_b_01ec64.pth", checksum)]
    inspection = cw.inspect_checkpoint(official, entries)
    assert inspection.verified and inspection.manifest_entry.name == "sam_vit_b"
    target = cw.import_inspected(inspection, tmp_path / "weights")
    assert target == tmp_path / "weights" / "sam_vit_b_01ec64.pth", "a verified file goes in under its manifest name"

    other = tmp_path / "resnet.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(2)}, other)
    with pytest.raises(wl.WeightsError, match="no SAM image encoder"):
        cw.inspect_checkpoint(other, entries)
    odd = tmp_path / "odd.pth"
    torch.save(sam_layout_keys(7), odd)
    with pytest.raises(wl.WeightsError, match="7 blocks"):
        cw.inspect_checkpoint(odd, entries)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(wl.WeightsError, match="Cannot read"):
        cw.inspect_checkpoint(broken, entries)
    with pytest.raises(wl.WeightsError, match="not a file"):
        cw.inspect_checkpoint(tmp_path / "missing.pth", entries)
    assert slicer is not None
