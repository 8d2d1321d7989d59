"""Real-size SAM vit_b (random init): parameter budget, official-layout checkpoint round trip, resizing."""

from __future__ import annotations

import pytest
import torch
from sam_official_layout import write_official_like_sam

from RRLMedSAMLib.models.autosam_heads import SamMaskDecoderHead
from RRLMedSAMLib.models.encoder3d import Encoder3D, count_parameters
from RRLMedSAMLib.models.sam_teacher import SamTeacher, resize_pos_embed, slices_to_sam_input
from RRLMedSAMLib.sam import checkpoints as ck


@pytest.fixture(scope="module")
def official_like(tmp_path_factory):
    """A random vit_b SAM saved with the official key layout, plus its in-memory image encoder."""
    folder = tmp_path_factory.mktemp("weights")
    path = folder / "sam_vit_b_random.pth"
    state, encoder = write_official_like_sam(path, "vit_b")
    manifest = (
        ck.CheckpointEntry(
            name="random_vit_b",
            model_type="vit_b",
            filename=path.name,
            url="file://test",
            sha256=ck.sha256_file(path),
            size_bytes=path.stat().st_size,
        ),
    )
    verified = ck.VerifiedCheckpoint(path=path, sha256=manifest[0].sha256, entry=manifest[0], model_type="vit_b")
    return {"encoder": encoder, "state": state, "path": path, "manifest": manifest, "folder": folder, "verified": verified}


def test_general_encoder_within_three_percent_of_sam_b(official_like):
    sam_b = count_parameters(official_like["encoder"])
    student = count_parameters(Encoder3D())
    print(f"\nSAM vit_b image encoder: {sam_b:,} parameters; Encoder3D: {student:,} ({100 * student / sam_b:.2f} %)")
    assert 89_000_000 < sam_b < 90_000_000
    assert student <= 2_690_127
    assert student <= 0.03 * sam_b


def test_checkpoint_round_trip_matches_in_memory_model(official_like):
    verified = ck.resolve_checkpoint("random_vit_b", manifest=official_like["manifest"], weights_dir=official_like["folder"])
    assert verified.model_type == "vit_b" and not verified.is_custom
    loaded = ck.image_encoder_state_dict(ck.load_state_dict(verified.path))
    reference = official_like["encoder"].state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)

    teacher = SamTeacher.from_checkpoint(verified, slice_size=128)
    assert teacher.weights_id == verified.sha256 and teacher.identity()["teacher"] == "vit_b"
    assert teacher.encoder.pos_embed.shape == (1, 8, 8, 768)

    # Independent reference: the 1024 model with its absolute embedding resized by hand; SAM's own
    # get_rel_pos then interpolates the global blocks' relative-position tables at run time.
    encoder = official_like["encoder"]
    original = encoder.pos_embed.data.clone()
    slice_ = torch.rand(1, 40, 56)
    x = slices_to_sam_input(slice_, 128)
    try:
        encoder.pos_embed.data = resize_pos_embed(original, (8, 8))
        with torch.no_grad():
            expected = encoder(x)
    finally:
        encoder.pos_embed.data = original
    got = teacher.encode_slices(slice_)
    assert got.shape == (1, 256, 8, 8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_checkpoint_resized_to_256(official_like):
    verified = official_like["verified"]
    teacher = SamTeacher.from_checkpoint(verified, slice_size=256, axis=2)
    assert teacher.encoder.blocks[2].attn.rel_pos_h.shape == (31, 64)
    assert teacher.encoder.blocks[0].attn.rel_pos_h.shape == (27, 64)
    features = teacher.encode_volume(torch.rand(12, 20, 1))
    assert features.shape == (256, 1, 16, 16)


def test_vit_head_initialised_from_checkpoint(official_like):
    verified = official_like["verified"]
    head = SamMaskDecoderHead.from_checkpoint(5, verified, slice_size=128)
    tokens = official_like["state"]["mask_decoder.mask_tokens.weight"]
    torch.testing.assert_close(head.decoder.mask_tokens.weight[4], tokens[0])
    torch.testing.assert_close(head.decoder.mask_tokens.weight[:4], tokens)
    mlp = official_like["state"]["mask_decoder.output_hypernetworks_mlps.1.layers.0.weight"]
    torch.testing.assert_close(head.decoder.output_hypernetworks_mlps[1].layers[0].weight, mlp)
    no_mask = official_like["state"]["prompt_encoder.no_mask_embed.weight"]
    torch.testing.assert_close(head.no_mask_embed.flatten(), no_mask.flatten())
    assert head(torch.randn(2, 256, 8, 8)).shape == (2, 5, 128, 128)
