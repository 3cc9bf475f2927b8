"""Animation frames -> MP4 (H.264), GIF or animated WebP, with the generation parameters in them;
an MP4 also gets a poster (its first frame as a JPEG), stored beside it."""

from __future__ import annotations

import io
import itertools
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from easel.media.encoding import ANIMATION_FORMATS, CONTENT_TYPES, GeneratedImage

POSTER_QUALITY = 90
MP4_CRF = 18  # x264 constant quality: visually lossless for generated content
MP4_PRESET = "medium"
WEBP_QUALITY = 90
EXIF_IMAGE_DESCRIPTION = 0x010E


def frame_durations(count: int, fps: float, unit_ms: int) -> list[int]:
    """Per-frame display times in ms, multiples of `unit_ms`, that add up to count / fps seconds.

    GIF counts in 10 ms units: 8 fps alternates 130 and 120 ms instead of drifting at 120.
    """
    ends = [round(k * 1000 / fps / unit_ms) * unit_ms for k in range(count + 1)]
    return [max(unit_ms, b - a) for a, b in itertools.pairwise(ends)]


def encode_animation(
    frames: Sequence[Image.Image], fmt: str, fps: int, seed: int, metadata: dict[str, Any]
) -> GeneratedImage:
    """Every frame, in order, at `fps`; the parameters go where the format keeps text."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    if fmt not in ANIMATION_FORMATS:
        raise ValueError(
            f"animation format must be one of {', '.join(ANIMATION_FORMATS)}, not {fmt!r}"
        )
    rgb = [f.convert("RGB") for f in frames]
    params = {**metadata, "seed": seed, "frames": len(rgb), "fps": fps}
    text = json.dumps(params, ensure_ascii=False)
    if fmt == "mp4":
        data = _mp4(rgb, fps, text)
    elif fmt == "gif":
        data = _gif(rgb, fps, text)
    else:
        data = _webp(rgb, fps, json.dumps(params))  # EXIF text is ASCII: JSON escapes the rest
    width, height = rgb[0].size
    return GeneratedImage(
        encoded=data,
        content_type=CONTENT_TYPES[fmt],
        seed=seed,
        width=width,
        height=height,
        poster=poster(rgb[0]) if fmt == "mp4" else None,
    )


def poster(frame: Image.Image) -> bytes:
    """A video's still: its first frame as a JPEG (what a player shows before it plays)."""
    buf = io.BytesIO()
    frame.save(buf, format="JPEG", quality=POSTER_QUALITY)
    return buf.getvalue()


def poster_key(key: str) -> str:
    """Where a clip's still is stored: `<order>/0.mp4` -> `<order>/0.poster.jpg`."""
    return f"{key.rsplit('.', 1)[0]}.poster.jpg"


def _gif(frames: list[Image.Image], fps: int, text: str) -> bytes:
    # Pillow merges a frame identical to the one before into its display time.
    buf = io.BytesIO()
    frames[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=frame_durations(len(frames), fps, 10),
        loop=0,
        comment=text.encode("utf-8"),
    )
    return buf.getvalue()


def _webp(frames: list[Image.Image], fps: int, text: str) -> bytes:
    exif = Image.Exif()
    exif[EXIF_IMAGE_DESCRIPTION] = text
    buf = io.BytesIO()
    frames[0].save(
        buf,
        format="WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=frame_durations(len(frames), fps, 1),
        loop=0,
        quality=WEBP_QUALITY,
        exif=exif.tobytes(),
    )
    return buf.getvalue()


def _mp4(frames: list[Image.Image], fps: int, text: str) -> bytes:
    """H.264 yuv420p (plays everywhere) through imageio-ffmpeg's bundled ffmpeg."""
    import imageio_ffmpeg  # type: ignore[import-untyped]

    width, height = frames[0].size
    with tempfile.TemporaryDirectory(prefix="easel-mp4-") as scratch:
        path = Path(scratch) / "clip.mp4"
        writer = imageio_ffmpeg.write_frames(
            str(path),
            (width, height),
            fps=fps,
            codec="libx264",
            quality=None,
            pix_fmt_out="yuv420p",
            macro_block_size=2,  # yuv420p needs even sides; never rescale
            ffmpeg_log_level="error",
            output_params=[
                "-crf",
                str(MP4_CRF),
                "-preset",
                MP4_PRESET,
                "-movflags",
                "+faststart",
                "-metadata",
                f"comment={text}",
            ],
        )
        writer.send(None)
        for frame in frames:
            writer.send(frame.tobytes())
        writer.close()
        return path.read_bytes()
