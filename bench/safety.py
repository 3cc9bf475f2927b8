"""Safety check cost: the NSFW classifier's images/s on this CPU, and the latency it adds to an
order beside the tiny SDXL pipeline's generation time.

    .venv/bin/python bench/safety.py [--rounds N] [--overlap BATCHES]

The classifier (open_nsfw through onnxruntime on CPU, EASEL_SAFETY_THREADS threads) scores
batches of 1, 4 and 16 generated PNGs as the worker does (`worker.outputs.screen`: decode,
score in one call, apply the plan's action); each order of n images pays one such call. The
tiny SDXL backend generates the same n images (one job, 2 steps), so the ratio is the share
the check adds to that order here. Medians of N rounds.

--overlap B: B batches of 4 images in a row as the worker's loop runs them, with the finishing
step (screen + store) serial before the next batch is generated (EASEL_FINISHING_BATCHES=0) or
as a task beside the next batch's generation (=1: one finishing batch at a time); the wall time
per batch of each, their ratio and the finishing step's own time, in the same run. On a CPU the
pipeline and the classifier share the cores; `--torch-threads 1` with EASEL_SAFETY_THREADS=1
gives each its own core, as a GPU worker's pipeline leaves the CPU to the classifier.
"""

from __future__ import annotations

import argparse
import asyncio
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
from easel.media.encoding import GeneratedImage
from easel.safety.classifier import load
from easel.storage import LocalStorage
from easel.worker.outputs import SafetyPolicy, screen, store_outputs

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


async def batches_ms(
    backend: SDXLBackend, policy: SafetyPolicy, storage: LocalStorage, count: int, overlap: bool
) -> float:
    """Wall time per batch of `count` batches of 4: generate, then finish (screen + store)
    in line or as a task beside the next batch (waited for before the next one starts)."""

    def finish(images: list[GeneratedImage], number: int) -> None:
        begun = time.perf_counter()
        store_outputs(storage, f"b{number}", screen(images, policy))
        finished.append((time.perf_counter() - begun) * 1000)

    finishing: asyncio.Future[None] | None = None
    finished.clear()
    started = time.perf_counter()
    for number in range(count):
        images = await asyncio.to_thread(backend.run, job(4), lambda *_: None)
        if finishing is not None:
            await finishing  # one finishing batch at a time
            finishing = None
        work = asyncio.to_thread(finish, images, number)
        if overlap:
            finishing = asyncio.ensure_future(work)
        else:
            await work
    if finishing is not None:
        await finishing
    return (time.perf_counter() - started) * 1000 / count


finished: list[float] = []  # ms of each finishing step of the last batches_ms


def overlap_table(backend: SDXLBackend, policy: SafetyPolicy, count: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as out:
        storage = LocalStorage(Path(out), "bench", "http://bench", 3600)
        asyncio.run(batches_ms(backend, policy, storage, 1, False))  # warm-up
        serial, overlapped, finishing = [], [], []
        for _ in range(rounds):
            serial.append(asyncio.run(batches_ms(backend, policy, storage, count, False)))
            finishing += finished
            overlapped.append(asyncio.run(batches_ms(backend, policy, storage, count, True)))
    s, o = statistics.median(serial), statistics.median(overlapped)
    f = statistics.median(finishing)
    print(f"{count} batches of 4 images, ms per batch (median of {rounds}):")
    print(f"{'serial':>10} {'overlapped':>11} {'overlapped/serial':>18} {'finish alone':>13}")
    print(f"{s:>10.1f} {o:>11.1f} {o / s:>18.2f} {f:>13.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--overlap", type=int, default=0, metavar="BATCHES")
    parser.add_argument("--torch-threads", type=int, default=0, help="0: torch's default")
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
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
        if args.overlap:
            overlap_table(backend, policy, args.overlap, args.rounds)
            return
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
