"""What the checks of a cutout cost: `python -m bench.checks`.

Measures worker/render.py's subject_facts with the photo (every measure the checks judge)
and shared/jobs/model.py's cutout_checks on a 1024² and a 2048×1536 cutout, median of
--runs. The checks' promise is at most 20 ms at 1024². With --escalation, also what a
photo escalated to base mode costs on this machine: the base model's cutout of the sample
photo against the fast one's (generated checkpoints, the worker's thread count).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bench.common import median_s, publish, random_checkpoint
from shared.jobs.model import JobRequest, cutout_checks
from shared.output import OutputFormat
from shared.settings import CheckThresholds
from worker.render import subject_facts

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "chelsea.png"


def cutout(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    photo = np.asarray(Image.open(SAMPLE).convert("RGB").resize((width, height)))
    alpha = np.zeros((height, width), np.uint8)
    cv2.ellipse(alpha, (width // 2, height // 2), (width // 3, height // 3), 0, 0, 360, 255, -1)
    return photo, cv2.GaussianBlur(alpha, (0, 0), 2)


def row(width: int, height: int, runs: int) -> str:
    photo, alpha = cutout(width, height)
    request = JobRequest(
        "ab" * 32, "inputs/x.png", width, height, ("color",), "color", OutputFormat(), {}
    )
    facts = subject_facts(alpha, photo)
    measure_s = median_s(lambda: subject_facts(alpha, photo), runs)
    judge_s = median_s(lambda: cutout_checks(facts, request, CheckThresholds()), runs)
    return f"| {width}×{height} | {measure_s * 1000:.1f} ms | {judge_s * 1e6:.0f} µs |"


def escalation_rows(runs: int = 3) -> list[str]:
    from cli import service_settings
    from worker.model import load_model

    photo = np.asarray(Image.open(SAMPLE).convert("RGB"))
    rows = ["| cutout of the sample photo | seconds (median) |", "|---|---|"]
    for mode in ("fast", "base"):
        settings = service_settings().with_overrides(
            model_mode=mode, model_ckpt=str(random_checkpoint(mode)), precision="fp32"
        )
        model = load_model(settings)
        seconds = median_s(lambda: model.segment(photo), runs)  # noqa: B023 - used at once
        rows.append(f"| {mode} ({model.precision}) | {seconds:.2f} s |")
    rows.append("An escalated photo costs the base row on top of the fast one.")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--write", action="store_true", help="record in bench/RESULTS.md")
    parser.add_argument("--escalation", action="store_true", help="time base mode's cutout too")
    args = parser.parse_args()
    rows = ["| cutout | measures (subject_facts) | judging (cutout_checks) |", "|---|---|---|"]
    for width, height in ((1024, 1024), (2048, 1536)):
        rows.append(row(width, height, args.runs))
    if args.escalation:
        rows += ["", *escalation_rows()]
    publish("Checks on a cutout (bench/checks.py)", "\n".join(rows), args.write)


if __name__ == "__main__":
    main()
