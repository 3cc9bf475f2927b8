"""The console's pure helpers: Reproduce for orders of every dialect, the usage chart."""

from __future__ import annotations

import re
from typing import Any

from easel.catalog import Catalog
from easel.console import chart, reproduce
from easel.console.web import safe_target
from easel.db.tables import Order


def order(model: str, alias: str, **extra: Any) -> Order:
    fields: dict[str, Any] = {
        "model": model,
        "model_alias": alias,
        "product_type": "static_image",
        "prompt": "a cat",
        "negative_prompt": "",
        "width": 1024,
        "height": 1024,
        "n": 1,
        "seed": 7,
        "steps": 20,
        "guidance": 5.0,
        "acceleration": "none",
        "llm_enhance": False,
        "reference_key": None,
        "inputs": "",
    }
    return Order(**(fields | extra))


def native(catalog: Catalog, made: Order) -> reproduce.Snippet:
    return next(s for s in reproduce.snippets(catalog, "http://e", made) if s.id == "native")


def test_reproduce_names_the_native_style_of_an_order_made_through_another_dialect(
    catalog_default: Catalog,
) -> None:
    by_id = order("sdxl-anime", "sdxl-anime")  # e.g. the openai dialect names the model id
    assert reproduce.native_body(catalog_default, by_id) == reproduce.native_body(
        catalog_default, order("sdxl-anime", "anime")
    )
    code = native(catalog_default, by_id).code
    assert code and '"style": "anime"' in code
    assert reproduce.again_refusal(catalog_default, by_id) is None
    no_style = order("qwen-image", "qwen")  # KIE's alias of a model without a style
    assert native(catalog_default, no_style).code is None
    assert "Run again cannot repeat" in (reproduce.again_refusal(catalog_default, no_style) or "")
    edit = order("sdxl-anime", "anime", reference_key="inputs/x.png")
    assert "input images" in (reproduce.again_refusal(catalog_default, edit) or "")
    fast = order("sdxl-anime", "anime", acceleration="high")
    assert "takes no acceleration" in native(catalog_default, fast).note


def test_a_day_of_refunds_draws_no_negative_bar() -> None:
    svg = chart.bars([("2026-01-01", -40), ("2026-01-02", 10)])
    heights = [float(h) for h in re.findall(r'height="(-?[0-9.]+)"><title>', svg)]
    assert heights[0] == 0 and heights[1] > 0


def test_redirect_targets_stay_on_console_paths() -> None:
    for bad in ("//evil.example", "https://evil.example/", "/console//evil", "/console/\\evil", ""):
        assert safe_target(bad, "/console/") == "/console/"
    assert safe_target("/console/keys?x=1", "/console/") == "/console/keys?x=1"
