"""A finished order's images and clips: screened by the safety check, put in storage under the
order's id (blocked ones under the private prefix with a random name, shown to no client, kept for
the operator's review)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from PIL import Image

from easel.catalog import Plan
from easel.media.encoding import GeneratedImage
from easel.media.video import poster_key
from easel.orders.lifecycle import NewOutput
from easel.safety.classifier import Undecodable, blurred, frames_of, nsfw_scores
from easel.storage import Storage, private_key

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
}
log = logging.getLogger(__name__)

FLAGGED, BLURRED, BLOCKED = "flagged", "blurred", "blocked"
ACTIONS = {"flag": FLAGGED, "blur": BLURRED, "block": BLOCKED}  # the plan's safety_action
STILLS_ONLY = ("video/mp4", "image/gif")


@dataclass(frozen=True)
class SafetyPolicy:
    """The order's plan's: outputs scoring at least `threshold` are handled by `action`."""

    threshold: float
    action: str  # block | blur | flag
    threads: int = 2
    frame_every: int = 8
    chunk: int = 16  # frames per classifier call (EASEL_SAFETY_CHUNK)


def policy_for(
    plan: Plan | None,
    asked: bool,
    force: bool,
    threads: int = 2,
    frame_every: int = 8,
    chunk: int = 16,
) -> SafetyPolicy | None:
    """An order's check: always when the operator forces it or the plan does not let a request
    turn it off (an unknown plan: the defaults), else when the order asked (`safety_check`)."""
    optional = plan is not None and plan.safety_optional
    if not (force or not optional or asked):
        return None
    return SafetyPolicy(
        threshold=plan.safety_threshold if plan else Plan.safety_threshold,
        action=plan.safety_action if plan else Plan.safety_action,
        threads=threads,
        frame_every=frame_every,
        chunk=chunk,
    )


@dataclass(frozen=True)
class Screened:
    image: GeneratedImage
    score: float | None = None  # None: not checked
    safety: str | None = None  # None: passed (or not checked); flagged, blurred or blocked
    original: bytes | None = None  # a blurred output's original, held for review


def screen(images: list[GeneratedImage], policy: SafetyPolicy | None) -> list[Screened]:
    """Score every output (a clip: its sampled frames, the highest counts), `policy.chunk`
    frames per classifier call, and apply the policy (blocking). No policy: nothing checked. An
    output that cannot be decoded for the check is held as blocked (fail closed)."""
    if policy is None:
        return [Screened(image) for image in images]
    frames: list[list[Image.Image]] = []
    for image in images:
        try:
            if image.still is not None:  # checked while its file is still being written
                frames.append([image.still.convert("RGB")])
                continue
            frames.append(frames_of(image.data, image.content_type, policy.frame_every))
        except Undecodable as exc:
            log.warning(
                "output could not be checked; held for review",
                extra={"action": "safety_undecodable", "reason": str(exc)},
            )
            frames.append([])
    scores = nsfw_scores([f for fs in frames for f in fs], policy.threads, policy.chunk)
    screened = []
    start = 0
    for image, taken in zip(images, frames, strict=True):
        if not taken:
            screened.append(Screened(image, None, BLOCKED))
            continue
        score = max(scores[start : start + len(taken)])
        start += len(taken)
        action = None
        if score >= policy.threshold:
            action = ACTIONS[policy.action]
            if action == BLURRED and (len(taken) > 1 or image.content_type in STILLS_ONLY):
                action = BLOCKED  # a clip is not blurred: it is held like a blocked image
        original = None
        if action == BLURRED:
            original = image.data
            image = replace(image, encoded=blurred(image.data, image.content_type), still=None)
        screened.append(Screened(image, score, action, original))
    return screened


def store_outputs(storage: Storage, order_id: str, outputs: list[Screened]) -> list[NewOutput]:
    """`<order id>/<index>.<ext>` for each output, in order; a blocked one (and a blurred one's
    original) under a private, random key (storage.private_key) (blocking)."""
    stored_outputs = []
    for index, out in enumerate(outputs):
        image = out.image
        extension = EXTENSIONS[image.content_type]
        key = (
            private_key(order_id, extension)
            if out.safety == BLOCKED
            else f"{order_id}/{index}.{extension}"
        )
        stored = storage.put(key, image.data, image.content_type)
        original_key = None
        if out.original is not None:
            original_key = private_key(order_id, extension)
            storage.put(original_key, out.original, image.content_type)
        if image.poster is not None:
            storage.put(poster_key(key), image.poster, "image/jpeg")
        stored_outputs.append(
            NewOutput(
                index=index,
                storage_key=key,
                content_type=image.content_type,
                seed=image.seed,
                width=image.width,
                height=image.height,
                bytes=stored.size,
                nsfw_score=out.score,
                safety=out.safety,
                original_key=original_key,
            )
        )
    return stored_outputs


def screen_and_store(
    storage: Storage, order_id: str, images: list[GeneratedImage], policy: SafetyPolicy | None
) -> list[NewOutput]:
    """`screen`, then `store_outputs`: one trip to a thread for both (blocking)."""
    return store_outputs(storage, order_id, screen(images, policy))
