"""One batch of claimed orders: the Job built from them, and its run, split in halves on OOM.

Every order of a batch keeps its own images (ImageSpec.order_id/index), seeds and charge, and
ends on its own: an order canceled while the batch runs is ended (refunded) at once and its
images are dropped when the call returns; the others go on. Only when no order is left does the
pipeline call stop at its next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from easel.backends.base import (
    Backend,
    Canceled,
    ImageSpec,
    Job,
    LeaseLost,
    LoraWeights,
    ProgressFn,
)
from easel.backends.numerics import NumericalFailure
from easel.catalog import Model
from easel.db.tables import Order
from easel.media.encoding import GeneratedImage
from easel.orders.queue import strength
from easel.worker.memory import free_memory, oom_errors

log = logging.getLogger(__name__)

Failure = tuple[str, str]  # (error code, message)


@dataclass(frozen=True)
class OrderFiles:
    """An order's further inputs as read from storage (orders/inputs.py)."""

    images: tuple[bytes, ...] = ()
    mask: bytes | None = None


class BatchRun:
    """Which orders of a batch are still to be delivered, and why the others ended."""

    def __init__(self, orders: Sequence[Order]) -> None:
        self.orders = list(orders)
        self._live = {o.id for o in orders}
        self._failures: dict[str, Failure] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()

    @property
    def live(self) -> list[str]:
        with self._lock:
            return [o.id for o in self.orders if o.id in self._live]

    def is_live(self, order_id: str) -> bool:
        with self._lock:
            return order_id in self._live

    def drop(self, order_id: str) -> None:
        """Deliver nothing for this order (it was canceled, or its lease was lost)."""
        with self._lock:
            self._live.discard(order_id)

    def lose(self, order_id: str) -> None:
        """Deliver nothing for this order: the worker no longer holds it (lease lost)."""
        with self._lock:
            self._live.discard(order_id)
            self._lost.add(order_id)

    def stopped(self) -> Canceled:
        """What stops the batch once no order is left: LeaseLost when every order was taken
        back (nothing of theirs is to be canceled), else Canceled."""
        with self._lock:
            lost = all(o.id in self._lost for o in self.orders)
        return (LeaseLost if lost else Canceled)(self.orders[0].id)

    def fail(self, order_id: str, code: str, message: str) -> None:
        """Fail this order (once the call returns); the others go on."""
        with self._lock:
            if order_id in self._live:
                self._live.discard(order_id)
                self._failures[order_id] = (code, message)

    def take_failures(self) -> dict[str, Failure]:
        with self._lock:
            failures, self._failures = self._failures, {}
            return failures


def with_trigger_words(prompt: str, loras: Sequence[LoraWeights]) -> str:
    """The prompt with the trigger words of the LoRAs in use (at scale 0 a LoRA is not)."""
    words = [w for lora in loras if lora.scale for w in lora.trigger_words if w not in prompt]
    return ", ".join([prompt, *words])


def build_job(
    model: Model,
    orders: Sequence[Order],
    references: Mapping[str, bytes],
    loras: Sequence[LoraWeights] = (),
    enhanced: Mapping[str, tuple[str, str]] | None = None,
) -> Job:
    """The one pipeline call for `orders` (compatible, as claimed together); the leader first.

    Shared settings come from the leader. `references`: order id -> reference image bytes.
    `loras`: the batch's LoRA set (one for all: the claim batches only equal sets), resolved.
    `enhanced`: order id -> (prompt, negative prompt) from the enhancer, template applied.
    """
    leader = orders[0]
    enhanced = enhanced or {}
    images = []
    for order in orders:
        prompt, negative = enhanced.get(
            order.id, (model.render_prompt(order.prompt), order.negative_prompt)
        )
        images += [
            ImageSpec(
                order_id=order.id,
                index=i,
                prompt=with_trigger_words(prompt, loras),
                negative_prompt=negative,
                seed=order.seed + i,
                reference=references.get(order.id),
                original_prompt=order.prompt if order.id in enhanced else None,
            )
            for i in range(order.n)
        ]
    return Job(
        model=model,
        width=leader.width,
        height=leader.height,
        steps=leader.steps,
        guidance=leader.guidance,
        images=images,
        output_format=leader.output_format,
        frames=leader.frames or 0,
        strength=strength(leader),
        scheduler=model.scheduler_for(leader.acceleration),
        loras=tuple(loras),
    )


def with_inputs(job: Job, further: Mapping[str, OrderFiles]) -> Job:
    """`job` with each order's further images and mask (order id -> what was read)."""
    if not further:
        return job
    images = [
        replace(
            spec, more_references=further[spec.order_id].images, mask=further[spec.order_id].mask
        )
        if spec.order_id in further
        else spec
        for spec in job.images
    ]
    return replace(job, images=images)


def out_of_memory_message(job: Job) -> str:
    what = f"{job.width}x{job.height} with {job.steps} steps"
    if job.frames:
        what += f" and {job.frames} frames"
    return (
        f"the GPU ran out of memory even for a single output ({what}); ask for a smaller size"
        f"{' or fewer frames' if job.frames else ''}, or have the operator lower "
        "EASEL_MAX_BATCH_IMAGES or EASEL_MODEL_MEMORY_GB to leave more memory free. "
        "The order was refunded"
    )


def numerical_failure_message(failure: NumericalFailure) -> str:
    return (
        f"the model produced {failure.what} instead of an image (numerical failure, often a "
        "float16 VAE overflowing: use an fp16-fixed VAE or run the VAE in float32); "
        "the order was refunded"
    )


async def run_splitting(
    backend: Backend, job: Job, progress: ProgressFn, batch: BatchRun
) -> dict[tuple[str, int], GeneratedImage]:
    """Run `job` for the live orders of `batch`; images by (order id, index).

    Out of memory: free the cache, run each half on its own (recursively); a single output that
    still does not fit fails its order. A numerical failure fails the orders it names and runs
    the rest again (same seeds, same images).
    """
    results: dict[tuple[str, int], GeneratedImage] = {}
    oom = oom_errors() if backend.local else ()

    async def run(part: Job) -> None:
        specs = [s for s in part.images if batch.is_live(s.order_id)]
        if not specs:
            return
        part = replace(part, images=specs)
        try:
            images = await backend.generate(part, progress)
        except oom:
            await asyncio.to_thread(free_memory)
            if len(specs) == 1:
                log.warning(
                    "out of memory on a single output",
                    extra={"action": "oom", "order_id": specs[0].order_id},
                )
                batch.fail(specs[0].order_id, "out_of_memory", out_of_memory_message(part))
                return
            half = len(specs) // 2
            log.warning(
                "out of memory; splitting the batch",
                extra={"action": "oom_split", "images": len(specs), "orders": part.order_ids},
            )
            await run(replace(part, images=specs[:half]))
            await run(replace(part, images=specs[half:]))
            return
        except NumericalFailure as failure:
            failed = [o for o in failure.order_ids if o in part.order_ids] or part.order_ids
            log.warning(
                "numerical failure", extra={"action": "numerical_failure", "orders": failed}
            )
            for order_id in failed:
                batch.fail(order_id, "numerical_failure", numerical_failure_message(failure))
            await run(part)
            return
        for spec, image in zip(specs, images, strict=True):
            results[(spec.order_id, spec.index)] = image

    await run(job)
    return results
