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

# ../shared/seeds/001: "Example Request (Text-to-Image)".
SEED_001_BODY = {
    "prompt": "A dragon flying over ancient mountains, digital art style",
    "image_size": "landscape_16_9",
    "num_inference_steps": 30,
    "guidance_scale": 7.5,
    "acceleration_level": "regular",
}

# ../shared/seeds/002: the "Request Body" of Create Task, and its cURL example's body.
SEED_002_BODY = {
    "model_id": "gpt-image-2",
    "prompt": "a serene zen garden at sunrise, ultra detailed",
    "image_urls": [],
    "aspect_ratio": "16:9",
}
SEED_002_CURL_BODY = {
    "model_id": "gpt-image-2",
    "prompt": "a serene zen garden at sunrise",
    "aspect_ratio": "16:9",
}
