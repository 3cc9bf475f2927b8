"""A finished order's images and clips, put in storage under the order's id."""

from __future__ import annotations

from easel.media.encoding import GeneratedImage
from easel.media.video import poster_key
from easel.orders.lifecycle import NewOutput
from easel.storage import Storage

EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "video/mp4": "mp4",
}


def store_outputs(storage: Storage, order_id: str, images: list[GeneratedImage]) -> list[NewOutput]:
    """`<order id>/<index>.<ext>` for each output, in order, and a clip's poster beside it
    (blocking)."""
    outputs = []
    for index, image in enumerate(images):
        key = f"{order_id}/{index}.{EXTENSIONS[image.content_type]}"
        stored = storage.put(key, image.data, image.content_type)
        if image.poster is not None:
            storage.put(poster_key(key), image.poster, "image/jpeg")
        outputs.append(
            NewOutput(
                index=index,
                storage_key=key,
                content_type=image.content_type,
                seed=image.seed,
                width=image.width,
                height=image.height,
                bytes=stored.size,
            )
        )
    return outputs
