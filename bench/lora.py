"""LoRA overhead per order: the same order with and without a LoRA on the tiny SDXL pipeline.

    .venv/bin/python bench/lora.py [--rounds N]

The real backend (SDXLBackend with the worker's default speedups) runs one order of one image
per call, alternating without and with a rank-4 LoRA on every UNet attention projection (made
offline with PEFT, as the tests do), on this machine's CPU. With a LoRA each call loads it as a
PEFT adapter, undoes the fused QKV projections, runs, removes the adapter and fuses again: that
is the per-order overhead. Medians of N rounds per setting, and their ratio.
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

from tests.support.tiny_lora import build_tiny_sdxl_lora
from tests.support.tiny_models import build_tiny_sdxl

from easel.backends.base import ImageSpec, Job, LoraWeights
from easel.backends.sdxl import SDXLBackend
from easel.catalog import Model
from easel.config import Settings

SETTINGS = [(512, 2), (512, 8)]  # (side, steps)


def job(side: int, steps: int, lora: LoraWeights | None) -> Job:
    spec = ImageSpec(order_id="o", index=0, prompt="a red fox", negative_prompt="", seed=1)
    return Job(
        model=Model(id="tiny", family="sdxl"),
        width=side,
        height=side,
        steps=steps,
        guidance=7.0,
        images=[spec],
        loras=(lora,) if lora else (),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_sdxl(Path(tmp) / "tiny-sdxl")
        file = build_tiny_sdxl_lora(folder, Path(tmp) / "loras" / "ink.safetensors")
        lora = LoraWeights("easel_ink", str(file.parent), file.name, 1.0, {"name": "ink"})
        model = Model(id="tiny", family="sdxl", source=str(folder))
        backend = SDXLBackend(model, "cpu", Settings(secret_key="bench"))
        backend.load()
        print(
            f"{'size':>9} {'steps':>5} {'without ms':>11} {'with LoRA ms':>13} "
            f"{'overhead ms':>12} {'ratio':>6}"
        )
        for side, steps in SETTINGS:
            times: dict[bool, list[float]] = {False: [], True: []}
            for use in (False, True):  # warm-up
                backend.run(job(side, steps, lora if use else None), lambda *_: None)
            for _ in range(args.rounds):
                for use in (False, True):
                    started = time.perf_counter()
                    backend.run(job(side, steps, lora if use else None), lambda *_: None)
                    times[use].append((time.perf_counter() - started) * 1000)
            plain, with_lora = statistics.median(times[False]), statistics.median(times[True])
            print(
                f"{side:>4}x{side:<4} {steps:>5} {plain:>11.1f} {with_lora:>13.1f} "
                f"{with_lora - plain:>12.1f} {with_lora / plain:>6.2f}"
            )


if __name__ == "__main__":
    main()
