"""Benchmarks: run methods side by side on a standard-layout dataset and compare them.

``methods`` (the registry), ``classical`` (affine-only and ANTs SyN label propagation),
``worker`` (one method phase in a child process, measuring its own peak memory), ``runner``
(orchestration and scoring), ``tables`` (per-method tables with ratios against ANTs SyN),
``plots`` (PNG figures) and ``machine`` (what the benchmark ran on).
"""
