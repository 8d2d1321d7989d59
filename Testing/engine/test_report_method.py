"""The report says once, truthfully, what training ran and with which SAM teacher."""

from __future__ import annotations

from RRLMedSAMLib.report.report import method_statement
from RRLMedSAMLib.run.methods import METHODS

NO_WEIGHTS = {"name": "none", "reason": "no verified SAM checkpoint found in /home/user/.cache/rrlmedsam/weights"}
VIT_B = {"name": "vit_b", "label": "SAM ViT-B (official)", "model_type": "vit_b", "parameters": 89670912,
         "weights_sha256": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", "slice_size": 256}


def _card(method: str, teacher: dict) -> dict:
    return {"method": method, "method_summary": METHODS[method].summary, "teacher": teacher}


def test_rrl_without_weights_says_it_trained_without_distillation() -> None:
    text = method_statement(_card("rrl", NO_WEIGHTS))
    assert text.startswith("Method: **rrl** — trained **without SAM distillation**")
    assert "no verified SAM checkpoint found" in text and "docs/user_guide.md" in text
    assert "DSKD" not in text and "distill" not in text.replace("without SAM distillation", "")
    assert "medical encoder, mutual-EMA, auto-prompting decoder" in text
    assert text.count("Method:") == 1 and text.count("teacher") == 0


def test_rrl_with_a_teacher_names_it_and_its_distillation() -> None:
    text = method_statement(_card("rrl", VIT_B))
    assert text.startswith("Method: **rrl** (DSKD from the SAM teacher, medical encoder, mutual-EMA, auto-prompting decoder)")
    assert "SAM ViT-B (official) (vit_b, 89670912 parameters, slices of 256 px)" in text
    assert "without" not in text and text.count("Method:") == 1


def test_random_teacher_is_not_called_sam() -> None:
    tiny = {"name": "tiny", "label": "tiny randomly initialised SAM-style encoder (NOT SAM weights; for tests only)",
            "parameters": 1000, "slice_size": 64}
    assert "NOT SAM weights" in method_statement(_card("rrl", tiny))


def test_methods_without_a_teacher_do_not_mention_distillation() -> None:
    plain = method_statement(_card("plain", {"name": "none", "reason": "method plain uses no teacher"}))
    assert plain == ("Method: **plain** (registration network + segmentation network on pseudo labels (no SAM)); "
                     "it uses no SAM teacher.")
    ablation = method_statement(_card("rrl-no-distill", {"name": "none", "reason": "method rrl-no-distill uses no teacher"}))
    assert "DSKD" not in ablation and "uses no SAM teacher" in ablation
