"""Safety check cost: the NSFW classifier's images/s on this CPU, and the latency it adds to an
order beside the tiny SDXL pipeline's generation time.

    .venv/bin/python bench/safety.py [--rounds N]

The classifier (open_nsfw through onnxruntime on CPU, EASEL_SAFETY_THREADS threads) scores
batches of 1, 4 and 16 generated PNGs as the worker does (`worker.outputs.screen`: decode,
score in one call, apply the plan's action); each order of n images pays one such call. The
tiny SDXL backend generates the same n images (one job, 2 steps), so the ratio is the share
the check adds to that order here. Medians of N rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.tiny_models import build_tiny_sdxl

from easel.backends.base import ImageSpec, Job
from easel.backends.sdxl import SDXLBackend
from easel.catalog import Model
from easel.config import Settings
from easel.safety.classifier import load
from easel.worker.outputs import SafetyPolicy, screen

SIDE, STEPS = 512, 2
BATCHES = (1, 4, 16)


def job(n: int) -> Job:
    specs = [
        ImageSpec(order_id="o", index=i, prompt="a red fox", negative_prompt="", seed=i)
        for i in range(n)
    ]
    return Job(
        model=Model(id="tiny", family="sdxl"),
        width=SIDE,
        height=SIDE,
        steps=STEPS,
        guidance=7.0,
        images=specs,
    )


def median_ms(run: object, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = Settings(secret_key="bench")
    policy = SafetyPolicy(0.8, "block", threads=settings.safety_threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_sdxl(Path(tmp) / "tiny-sdxl")
        backend = SDXLBackend(Model(id="tiny", family="sdxl", source=str(folder)), "cpu", settings)
        backend.load()
        started = time.perf_counter()
        load(settings.safety_threads)
        load_ms = (time.perf_counter() - started) * 1000
        print(f"classifier load (once per worker process): {load_ms:.0f} ms")
        print(
            f"{'images':>6} {'generate ms':>12} {'check ms':>9} {'images/s':>9} "
            f"{'check/generate':>15}"
        )
        for n in BATCHES:
            images = backend.run(job(n), lambda *_: None)
            screen(images, policy)  # warm-up
            check = median_ms(lambda images=images: screen(images, policy), args.rounds)
            generate = median_ms(lambda n=n: backend.run(job(n), lambda *_: None), args.rounds)
            print(
                f"{n:>6} {generate:>12.1f} {check:>9.1f} {n / check * 1000:>9.1f} "
                f"{check / generate:>15.2f}"
            )


if __name__ == "__main__":
    main()
