"""The Reproduce panel: one order as the same request in each API Easel speaks (curl), and as
Python with the openai SDK and Easel's own SDK."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from easel.catalog import Catalog
from easel.db.tables import Order
from easel.dialects import kie, kirin, tasks

KEY = "$EASEL_API_KEY"
OPENAI_NOTE = "steps follow this API's quality, not the order's: the pixels may differ"


@dataclass(frozen=True)
class Snippet:
    id: str
    title: str
    code: str | None  # None: this API cannot ask for this model
    note: str = ""


def _name_in(catalog: Catalog, dialect: str, order: Order) -> str | None:
    """The name `dialect` takes for the order's model: its own alias when accepted, else any."""
    accepted = catalog.accepted(dialect)
    if order.model_alias in accepted:
        return order.model_alias
    for name in accepted:
        found = catalog.named(name)
        if found is not None and found.id == order.model:
            return name
    return None


def _ratio(order: Order, ratios: tuple[str, ...]) -> str:
    want = order.width / order.height

    def off(ratio: str) -> float:
        w, h = (int(x) for x in ratio.split(":"))
        return abs(w / h - want)

    return min(ratios, key=off)


def _curl(base: str, path: str, body: dict[str, Any]) -> str:
    data = json.dumps(body, ensure_ascii=False, indent=2)
    return (
        f"curl -sS -X POST {base}{path} \\\n"
        f'  -H "Authorization: Bearer {KEY}" \\\n'
        "  -H 'Content-Type: application/json' \\\n"
        f"  -d {shlex.quote(data)}"
    )


def native_style(catalog: Catalog, order: Order) -> str | None:
    """The native API's style for the order's model, as the native dialect resolves styles (an
    order made through another dialect names an alias or a model id); None when it has none."""
    if catalog.style(order.model_alias) is not None:
        return order.model_alias
    for name in (order.model_alias, order.model):
        found = catalog.named(name)
        if found is not None and found.styles:
            return found.styles[0]
    return None


def again_refusal(catalog: Catalog, order: Order) -> str | None:
    """Why Run again cannot repeat the order, or None."""
    if order.reference_key or order.inputs:
        return "Run again repeats orders without input images; send this one again through the API"
    if native_style(catalog, order) is None:
        return (
            f"{order.model_alias} is no style of this server's playground; "
            "Run again cannot repeat it"
        )
    return None


def native_body(catalog: Catalog, order: Order) -> dict[str, Any] | None:
    style = native_style(catalog, order)
    if style is None:
        return None
    body: dict[str, Any] = {
        "style": style,
        "product_type": order.product_type,
        "prompt": order.prompt,
        "width": order.width,
        "height": order.height,
        "seed": order.seed,
        "steps": order.steps,
    }
    if order.negative_prompt:
        body["negative_prompt"] = order.negative_prompt
    if order.llm_enhance:
        body["llm_enhance"] = True
    return body


def snippets(catalog: Catalog, base: str, order: Order) -> list[Snippet]:
    native = native_body(catalog, order)
    native_note = (
        f"the native API takes no acceleration: this runs without {order.acceleration} "
        "(the output differs)"
        if order.acceleration != "none"
        else ""
    )
    out = [
        Snippet(
            "native",
            "Native API (curl)",
            _curl(base, "/api/v1/generate", native) if native else None,
            native_note,
        )
    ]
    kie_name = _name_in(catalog, "kie", order)
    size = min(
        kie.IMAGE_SIZES,
        key=lambda k: abs(
            kie.IMAGE_SIZES[k][0] / kie.IMAGE_SIZES[k][1] - order.width / order.height
        ),
    )
    kie_body = {
        "model": kie_name,
        "prompt": order.prompt,
        "image_size": size,
        "num_inference_steps": order.steps,
        "guidance_scale": order.guidance,
        "seed": order.seed,
    }
    out.append(
        Snippet(
            "kie",
            "KIE Qwen API (curl)",
            _curl(base, "/api/v1/qwen/generate", kie_body) if kie_name else None,
            "image_size is the nearest of the API's sizes",
        )
    )
    tasks_name = _name_in(catalog, "tasks", order)
    tasks_body = {
        "model_id": tasks_name,
        "prompt": order.prompt,
        "aspect_ratio": _ratio(order, tasks.ASPECT_RATIOS),
    }
    out.append(
        Snippet(
            "tasks",
            "Task API (curl)",
            _curl(base, "/api/v1/tasks/create", tasks_body) if tasks_name else None,
            "this API takes no seed or steps: the output differs",
        )
    )
    openai_name = _name_in(catalog, "openai", order)
    openai_body = {
        "model": openai_name,
        "prompt": order.prompt,
        "size": f"{order.width}x{order.height}",
        "n": order.n,
        "seed": order.seed,
    }
    out.append(
        Snippet(
            "openai",
            "OpenAI Images API (curl)",
            _curl(base, "/v1/images/generations", openai_body) if openai_name else None,
            OPENAI_NOTE,
        )
    )
    kirin_name = _name_in(catalog, "kirin", order)
    kirin_body = {
        "model": kirin_name,
        "prompt": order.prompt,
        "n": order.n,
        "aspect_ratio": _ratio(order, kirin.ASPECT_RATIOS),
    }
    out.append(
        Snippet(
            "kirin",
            "Kirin API (curl)",
            _curl(base, "/kirin/v1/images/generations", kirin_body) if kirin_name else None,
            "this API takes no seed: the output differs",
        )
    )
    openai_py = (
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base}/v1", api_key=os.environ["EASEL_API_KEY"])\n'
        "result = client.images.generate(\n"
        f"    model={openai_name!r},\n    prompt={order.prompt!r},\n"
        f'    size="{order.width}x{order.height}",\n    n={order.n},\n'
        f'    extra_body={{"seed": {order.seed}}},\n)\nprint(result.data[0].url)'
    )
    out.append(
        Snippet(
            "openai-python",
            "Python, openai SDK",
            "import os\n" + openai_py if openai_name else None,
            OPENAI_NOTE,
        )
    )
    easel_py = None
    if native:
        args = ",\n".join(f"    {k}={v!r}" for k, v in native.items())
        easel_py = (
            "from easel.client import Easel\n\n"
            f'with Easel("{base}") as easel:  # the key from EASEL_API_KEY\n'
            f"    order = easel.generate(\n    {args.replace(chr(10), chr(10) + '    ')},\n    )\n"
            '    order.wait()\n    order.download("outputs/")'
        )
    out.append(Snippet("easel-python", "Python, Easel SDK", easel_py, native_note))
    return out
