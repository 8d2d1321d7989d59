"""Data-parallel training under ``torchrun``: what the ranks other than 0 do, and the shared stages.

Rank 0 runs :func:`RRLMedSAMLib.training.trainer.train` as a single process would: it holds the run
folder's lock, validates the request, writes the configuration and the prepared data, and at the
end the model, the model card and the volume calibration. The other ranks wait for that setup
(:func:`RRLMedSAMLib.training.rank_follower.follow_training`), then run the same stages on the same weights, each on its own draw of
scans per step (:mod:`RRLMedSAMLib.training.stage_runner`); the optimisers average gradients over
the ranks.

The stages computed once per volume are split across the ranks and shared through the run folder:

* ``teacher_features``: each rank encodes its share of the volumes into the teacher feature cache
  (``cache/teacher/``, one file per volume, written atomically); after a barrier every rank reads
  all of them back.
* ``pseudo_labels``: each rank warps the atlas label onto its share of the scans and writes one
  file per scan (``cache/pseudo_label_shares/<scan>-<weights digest>.safetensors``, atomically);
  after a barrier every rank reads all of them, rank 0 writes ``cache/pseudo_labels.safetensors``
  and removes the shares. A share names the registration weights it came from, so a relaunched job
  reuses the shares of the same weights and never those of others.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from RRLMedSAMLib.io.atomic import atomic_path
from RRLMedSAMLib.progress import ProgressReporter
from RRLMedSAMLib.run.distributed import ProcessGroup, modules_digest
from RRLMedSAMLib.run.folder import RunFolder
from RRLMedSAMLib.sam.feature_cache import FeatureTeacher
from RRLMedSAMLib.training.prepare import PreparedData
from RRLMedSAMLib.training.pseudo_labels import PseudoLabeller, load_pseudo_labels, progress_message, save_pseudo_labels
from RRLMedSAMLib.training.teacher_features import compute_teacher_features

SHARES_FOLDER = Path("cache") / "pseudo_label_shares"


def silent_progress() -> ProgressReporter:
    """A reporter that prints and logs nothing (ranks other than 0); a stop file still stops it."""
    return ProgressReporter(None, stream=open(os.devnull, "w"), show_bar=False, min_interval_s=3600.0)  # noqa: SIM115


def shared_teacher_features(
    group: ProcessGroup, progress: ProgressReporter, teacher: FeatureTeacher, volumes: Mapping[str, np.ndarray],
    cache_folder: Path,
) -> dict[str, torch.Tensor]:
    """Teacher features ``(256, n, S/16, S/16)`` float16 of every volume; each rank encodes its share."""
    names = list(volumes)
    compute_teacher_features(teacher, {name: volumes[name] for name in group.shard(names)}, cache_folder, progress)
    group.barrier()
    return compute_teacher_features(teacher, volumes, cache_folder, silent_progress())


def shared_pseudo_labels(
    group: ProcessGroup, progress: ProgressReporter, run: RunFolder, data: PreparedData, labeller: PseudoLabeller,
) -> np.ndarray:
    """The atlas label warped onto every scan ``(N, D, H, W)``; each rank registers its share of the scans."""
    digest = modules_digest({"registration": labeller.registration})[:16]
    folder = run.root / SHARES_FOLDER
    paths = [folder / f"{index:05d}-{digest}.safetensors" for index in range(len(data.scans))]
    mine = group.shard(range(len(data.scans)))
    progress.start_stage("pseudo_labels", len(mine), f"warping the atlas label onto {len(mine)} of "
                                                         f"{len(data.scans)} scans on each of {group.world_size} ranks")
    for done, index in enumerate(mine, start=1):
        if paths[index].is_file():
            label = load_pseudo_labels(paths[index])[0]
        else:
            label = labeller(index)
            with atomic_path(paths[index]) as temp:
                save_pseudo_labels(temp, [label])
        progress.update(done, message=progress_message(data.scan_names[index], label))
    group.barrier()
    labels = [load_pseudo_labels(path)[0] for path in paths]
    if group.is_main:
        with atomic_path(run.pseudo_labels) as temp:
            save_pseudo_labels(temp, labels)
    group.barrier()
    if group.is_main:
        shutil.rmtree(folder, ignore_errors=True)
    progress.end_stage()
    return np.stack([label.classes for label in labels])
