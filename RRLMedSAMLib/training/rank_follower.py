"""A rank other than 0 of a data-parallel job: wait for rank 0's setup, then train alongside it.

See :mod:`RRLMedSAMLib.training.data_parallel` for how the ranks share the work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from torch import nn

from RRLMedSAMLib.run.config import run_settings
from RRLMedSAMLib.run.distributed import ProcessGroup
from RRLMedSAMLib.run.folder import RunFolder, read_config
from RRLMedSAMLib.training.context import TrainingContext
from RRLMedSAMLib.training.data_parallel import silent_progress
from RRLMedSAMLib.training.prepare import load_prepared


def follow_training(
    out: Path, group: ProcessGroup, trainers: Mapping[str, Callable[[TrainingContext], dict[str, nn.Module]]]
) -> RunFolder:
    """A rank other than 0: wait for rank 0's setup of ``out``, then train alongside it.

    Writes nothing but its shares of the shared stages; raises :class:`InputError` when rank 0
    refused the request.
    """
    run = RunFolder(Path(out))
    group.wait_for_setup()
    config = read_config(run)
    method, preset, settings, teacher = run_settings(config)
    data = load_prepared(run.prepared)
    assert group.device is not None
    context = TrainingContext(run, config, method, preset, settings, data, group.device, silent_progress(),
                              int(config["seed"]), teacher, group)
    trainers[method.family](context)
    return run
