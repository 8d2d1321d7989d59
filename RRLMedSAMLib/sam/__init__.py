"""SAM support code: checkpoint manifest and verification, torchvision-free model code, feature cache.

Nothing here imports the ``segment_anything`` package's ``__init__`` (it needs torchvision, which
has no CPU build matching our torch); see :mod:`RRLMedSAMLib.sam.modeling`.
"""
