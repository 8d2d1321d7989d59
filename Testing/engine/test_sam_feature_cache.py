"""Teacher feature cache: hits without re-encoding, invalidation on any setting change, float16 storage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from RRLMedSAMLib.models.sam_teacher import SamTeacher
from RRLMedSAMLib.sam.feature_cache import TeacherFeatureCache, array_sha256


class CountingTeacher:
    """Wraps a teacher and counts encode_volume calls."""

    def __init__(self, teacher: SamTeacher) -> None:
        self.teacher = teacher
        self.calls = 0

    def identity(self) -> dict[str, str]:
        return self.teacher.identity()

    def encode_volume(self, volume):
        self.calls += 1
        return self.teacher.encode_volume(volume)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(0).random((3, 24, 20), dtype=np.float32)


def test_second_call_hits_without_encoding(tmp_path, volume):
    cache = TeacherFeatureCache(tmp_path / "cache")
    teacher = CountingTeacher(SamTeacher.tiny(slice_size=64))
    first = cache.features(teacher, volume)
    second = cache.features(teacher, volume)
    assert teacher.calls == 1 and cache.hits == 1 and cache.misses == 1
    assert first.shape == (256, 3, 4, 4) and first.dtype == torch.float32
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    fresh = TeacherFeatureCache(tmp_path / "cache")
    torch.testing.assert_close(fresh.features(teacher, volume), first, rtol=0, atol=0)
    assert teacher.calls == 1


def test_stored_as_float16_with_metadata(tmp_path, volume):
    cache = TeacherFeatureCache(tmp_path)
    teacher = SamTeacher.tiny(slice_size=64)
    cache.features(teacher, volume)
    (path,) = list(tmp_path.glob("*.safetensors"))
    with safe_open(str(path), framework="pt") as handle:
        assert handle.get_tensor("features").dtype == torch.float16
        metadata = handle.metadata()
    assert metadata["volume_sha256"] == array_sha256(volume)
    assert metadata["slice_size"] == "64" and metadata["weights_sha256"] == teacher.weights_id
    assert not list(tmp_path.glob(".*"))


@pytest.mark.parametrize(
    "change",
    [
        {"slice_size": 32},
        {"axis": 1},
        {"seed": 5},
    ],
)
def test_setting_change_invalidates(tmp_path, volume, change):
    cache = TeacherFeatureCache(tmp_path)
    base = CountingTeacher(SamTeacher.tiny(slice_size=64))
    cache.features(base, volume)
    settings = {"slice_size": 64, "axis": 0, "seed": 0, **change}
    changed = CountingTeacher(SamTeacher.tiny(**settings))
    cache.features(changed, volume)
    assert changed.calls == 1 and cache.misses == 2
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_volume_change_or_explicit_hash(tmp_path, volume):
    cache = TeacherFeatureCache(tmp_path)
    teacher = CountingTeacher(SamTeacher.tiny(slice_size=64))
    cache.features(teacher, volume)
    modified = volume.copy()
    modified[0, 0, 0] += 0.5
    cache.features(teacher, modified)
    assert teacher.calls == 2
    cache.features(teacher, volume, volume_sha256="file-hash-abc")
    cache.features(teacher, modified, volume_sha256="file-hash-abc")
    assert teacher.calls == 3


def test_corrupt_file_is_recomputed(tmp_path, volume):
    cache = TeacherFeatureCache(tmp_path)
    teacher = CountingTeacher(SamTeacher.tiny(slice_size=64))
    expected = cache.features(teacher, volume)
    (path,) = list(tmp_path.glob("*.safetensors"))
    path.write_bytes(b"garbage")
    torch.testing.assert_close(cache.features(teacher, volume), expected, rtol=0, atol=0)
    assert teacher.calls == 2
    cache.features(teacher, volume)
    assert teacher.calls == 2


def test_array_hash_sees_dtype_shape_and_values():
    a = np.zeros((2, 3), dtype=np.float32)
    assert array_sha256(a) == array_sha256(torch.zeros(2, 3))
    assert array_sha256(a) != array_sha256(a.reshape(3, 2))
    assert array_sha256(a) != array_sha256(a.astype(np.float64))
