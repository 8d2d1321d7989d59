"""RRL-MedSAM headless engine: one-shot 3D segmentation from a single annotated atlas.

The engine never imports Qt or Slicer. Run it as ``rrlmedsam`` or ``python -m RRLMedSAMLib``.
"""

__version__ = "0.1.0"

#: Bumped whenever a run folder written by an older engine can no longer be read.
MODEL_FORMAT_VERSION = 2
