"""Forward time per slice: SAM teacher (real-size vit_b, random init) vs the general encoder (Encoder3D).

What is measured (forward passes only, ``torch.inference_mode``, after ``--warmup`` untimed runs;
the median of ``--repeats`` timed runs is reported). The student's pass over a 64³ volume takes
a tenth of a second, so a few repeats are at the mercy of the VM's noise: 2 repeats measured it
anywhere from 1.4 to 3.6 ms per slice. With the default of 12, four runs on the same idle VM
gave ratios of 54x to 84x at 128² slices: report the spread, not one run.

* teacher: ``SamTeacher`` built for ``--slice-size`` (positional embeddings sized for it), fed
  ``--slices`` grey slices of ``slice-size``\u00b2 already at SAM's input size, in batches of
  ``--batch`` (so preprocessing is included but no resize); time / number of slices;
* student: ``Encoder3D`` applied to one volume ``(1, 1, slices, slice-size, slice-size)`` - the 3-D
  equivalent of that stack of slices - time / number of slices. The student is 3-D, so "per slice"
  means "per slice of a volume it processes as a whole".

With ``--volume N`` both encode the same working-grid volume ``N``³ the way training does: the
teacher slice by slice, each slice resized to ``--slice-size`` (``SamTeacher.encode_volume``, the
code path of the teacher-feature stage), the student the whole ``N``³ volume at its own grid;
both times are divided by the ``N`` slices.

Random weights: timings do not depend on the values. Usage::

    python bench/teacher_vs_student.py [--slice-size 128] [--slices 16 | --volume 64] [--batch 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from RRLMedSAMLib.models.encoder3d import Encoder3D, count_parameters
from RRLMedSAMLib.models.sam_teacher import SamTeacher


def _timed(fn, repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slice-size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=16, help="slices per volume (a multiple of 16 for Encoder3D)")
    parser.add_argument("--volume", type=int, default=0,
                        help="encode one N^3 working-grid volume as training does (teacher resizes slices)")
    parser.add_argument("--batch", type=int, default=8, help="teacher slices per forward pass")
    parser.add_argument("--repeats", type=int, default=12, help="timed runs of each (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs of each before timing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    teacher = SamTeacher.random("vit_b", slice_size=args.slice_size, batch_size=args.batch).to(device)
    student = Encoder3D().to(device).eval()
    if args.volume:
        args.slices = args.volume
        grid = torch.rand(args.volume, args.volume, args.volume)
        volume = grid[None, None].to(device)

        def run_teacher() -> None:
            teacher.encode_volume(grid)
    else:
        slices = torch.rand(args.slices, args.slice_size, args.slice_size)
        volume = slices[None, None].to(device)

        def run_teacher() -> None:
            teacher.encode_slices(slices)

    def run_student() -> None:
        with torch.inference_mode():
            student(volume)

    teacher_s = _timed(run_teacher, args.repeats, args.warmup, device) / args.slices
    student_s = _timed(run_student, args.repeats, args.warmup, device) / args.slices
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "slice_size": args.slice_size,
        "slices": args.slices,
        "student_input": list(volume.shape[2:]),
        "teacher_batch": args.batch,
        "repeats": args.repeats,
        "teacher_params": count_parameters(teacher.encoder),
        "student_params": count_parameters(student),
        "teacher_ms_per_slice": round(1000 * teacher_s, 2),
        "student_ms_per_slice": round(1000 * student_s, 2),
        "teacher_over_student": round(teacher_s / student_s, 2),
    }
    print(
        f"teacher vit_b ({result['teacher_params']:,} params) at {args.slice_size}x{args.slice_size}: "
        f"{result['teacher_ms_per_slice']} ms/slice | Encoder3D ({result['student_params']:,} params) on "
        f"{tuple(volume.shape)}: {result['student_ms_per_slice']} ms/slice "
        f"| ratio {result['teacher_over_student']} [{device}, {result['threads']} threads]"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
