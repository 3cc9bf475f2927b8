"""The seed documents' own example requests, verbatim."""

from __future__ import annotations

# ../shared/seeds/000: the curl body of "Submit Generation Task".
SEED_000_BODY = {
    "style": "guofeng",
    "product_type": "static_image",
    "prompt": "a warrior in red standing in bamboo forest holding a sword, ink wash painting style",
    "width": 768,
    "height": 1152,
    "llm_enhance": True,
    "webhook_url": "https://your-app.com/callback",
}
