"""SAM checkpoint manifest, weights folder resolution, sha256 verification and safe loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.models.sam_teacher import TINY_ENCODER_CONFIG, SamTeacher, build_image_encoder
from RRLMedSAMLib.resources import manifest_path
from RRLMedSAMLib.sam import checkpoints as ck


def _save_tiny_sam(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    encoder = build_image_encoder(TINY_ENCODER_CONFIG, img_size=64)
    state = {f"image_encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["prompt_encoder.no_mask_embed.weight"] = torch.randn(1, 256)
    torch.save(state, path)
    return state


def _entry(path: Path, name: str = "tiny_test") -> ck.CheckpointEntry:
    return ck.CheckpointEntry(
        name=name,
        model_type="vit_b",
        filename=path.name,
        url="file://test",
        sha256=ck.sha256_file(path),
        size_bytes=path.stat().st_size,
    )


def test_shipped_manifest_lists_official_checkpoints():
    entries = {e.name: e for e in ck.load_manifest()}
    assert {"sam_vit_b", "sam_vit_l", "sam_vit_h", "medsam_vit_b"} <= set(entries)
    assert entries["sam_vit_b"].filename == "sam_vit_b_01ec64.pth"
    assert entries["sam_vit_b"].sha256 == "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"
    assert entries["sam_vit_h"].size_bytes == 2564550879
    assert entries["medsam_vit_b"].sha256 is None
    raw = json.loads(manifest_path().read_text())
    for item in raw["checkpoints"]:
        assert set(item) >= {"name", "model_type", "filename", "url", "sha256", "size_bytes"}


def test_weights_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(ck.WEIGHTS_DIR_ENV, str(tmp_path / "env"))
    assert ck.resolve_weights_dir(tmp_path / "setting") == tmp_path / "setting"
    assert ck.resolve_weights_dir() == tmp_path / "env"
    monkeypatch.delenv(ck.WEIGHTS_DIR_ENV)
    assert ck.resolve_weights_dir() == Path("~/.cache/rrlmedsam/weights").expanduser()


def test_sha256_streams_large_files(tmp_path):
    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 40000
    path.write_bytes(data)
    import hashlib

    assert ck.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_resolve_by_name_from_weights_dir(tmp_path, monkeypatch):
    path = tmp_path / "tiny.pth"
    _save_tiny_sam(path)
    manifest = (_entry(path),)
    monkeypatch.setenv(ck.WEIGHTS_DIR_ENV, str(tmp_path))
    verified = ck.resolve_checkpoint("tiny_test", manifest=manifest)
    assert verified.path == path and not verified.is_custom and verified.model_type == "vit_b"
    with pytest.raises(InputError, match="not found"):
        ck.resolve_checkpoint("tiny_test", manifest=manifest, weights_dir=tmp_path / "empty")
    with pytest.raises(InputError, match="unknown SAM checkpoint"):
        ck.resolve_checkpoint("nope", manifest=manifest)


def test_tampered_file_is_refused(tmp_path):
    path = tmp_path / "tiny.pth"
    _save_tiny_sam(path)
    manifest = (_entry(path),)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        ck.resolve_checkpoint("tiny_test", manifest=manifest, weights_dir=tmp_path)
    with pytest.raises(InputError, match="matches no known"):
        ck.resolve_checkpoint(path=path, manifest=manifest)


def test_unknown_hash_needs_allow_custom(tmp_path):
    path = tmp_path / "mine.pth"
    _save_tiny_sam(path, seed=3)
    with pytest.raises(InputError, match="custom"):
        ck.resolve_checkpoint(path=path, manifest=ck.load_manifest())
    verified = ck.resolve_checkpoint(path=path, manifest=ck.load_manifest(), allow_custom=True)
    assert verified.is_custom and verified.model_type is None and verified.label.startswith("custom:")
    teacher = SamTeacher.from_checkpoint(verified, slice_size=64, config=TINY_ENCODER_CONFIG)
    assert teacher.model_type == "tiny"
    assert teacher.weights_id == verified.sha256


def test_entry_without_published_hash_is_refused_by_name(tmp_path):
    with pytest.raises(InputError, match="no published sha256"):
        ck.resolve_checkpoint("medsam_vit_b", weights_dir=tmp_path)


def test_size_mismatch_is_reported_before_hashing(tmp_path):
    path = tmp_path / "tiny.pth"
    _save_tiny_sam(path)
    entry = _entry(path)
    wrong = ck.CheckpointEntry(**{**entry.__dict__, "size_bytes": entry.size_bytes + 1})
    with pytest.raises(InputError, match="bytes"):
        ck.resolve_checkpoint("tiny_test", manifest=(wrong,), weights_dir=tmp_path)


def test_import_checkpoint_copies_into_weights_dir(tmp_path):
    source = tmp_path / "download" / "tiny.pth"
    source.parent.mkdir()
    _save_tiny_sam(source)
    manifest = (_entry(source),)
    imported = ck.import_checkpoint(source, weights_dir=tmp_path / "weights", manifest=manifest)
    assert imported.path == tmp_path / "weights" / "tiny.pth"
    assert imported.path.read_bytes() == source.read_bytes()
    assert ck.resolve_checkpoint("tiny_test", manifest=manifest, weights_dir=tmp_path / "weights").sha256 == imported.sha256


class _Payload:
    def __init__(self) -> None:
        self.value = 1


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.x": _Payload()}, path)
    with pytest.raises(InputError, match="not a loadable tensor checkpoint"):
        ck.load_state_dict(path)


def test_load_state_dict_variants(tmp_path):
    from safetensors.torch import save_file

    tensors = {"patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}
    save_file(tensors, str(tmp_path / "enc.safetensors"))
    torch.save({"model": tensors}, tmp_path / "wrapped.pth")
    for name in ("enc.safetensors", "wrapped.pth"):
        state = ck.load_state_dict(tmp_path / name)
        assert ck.infer_model_type(ck.image_encoder_state_dict(state)) == "vit_b"
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError):
        ck.load_state_dict(tmp_path / "garbage.pth")
    with pytest.raises(InputError, match="no SAM image encoder"):
        ck.image_encoder_state_dict({"mask_decoder.x": torch.zeros(1)})
