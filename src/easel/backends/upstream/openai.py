"""OpenAI Images (`POST /images/generations`, `/images/edits` with a reference image) at any
OpenAI-compatible base URL, another Easel's included. Synchronous: the answer carries the images,
as `b64_json` or URLs. Authentication: `Authorization: Bearer <key>`."""

from __future__ import annotations

import base64
import secrets
from typing import Any, ClassVar

from easel.backends.upstream.base import (
    Provider,
    Remote,
    RemoteFailed,
    RemoteOutput,
    Request,
    Status,
)


def multipart(
    fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]
) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = "easel" + secrets.token_hex(12)
    parts: list[bytes] = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    for name, (filename, data, content_type) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class OpenAIProvider(Provider):
    name: ClassVar[str] = "openai"
    resumable: ClassVar[bool] = False

    def _fields(self, req: Request) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "model": self.channel.model,
            "prompt": req.prompt,
            "n": req.n,
            "size": req.size,
        }
        if not self.channel.model.startswith("gpt-image"):  # gpt-image-* always answer base64
            fields["response_format"] = "b64_json"
        fields.update(self.channel.options)
        return fields

    async def submit(self, req: Request) -> Remote:
        headers = {"authorization": f"Bearer {self.key}"}
        fields = self._fields(req)
        if req.reference is None:
            response = await self.http.call(
                "POST", f"{self.base_url}/images/generations", json=fields, headers=headers
            )
        else:
            body, content_type = multipart(
                {k: str(v) for k, v in fields.items()},
                {"image": ("reference.png", req.reference, "image/png")},
            )
            response = await self.http.call(
                "POST",
                f"{self.base_url}/images/edits",
                content=body,
                headers=headers | {"content-type": content_type},
            )
        refused = self.refusal(response, "images")
        if refused is not None:
            raise refused
        try:
            items = response.json()["data"]
            outputs = [
                RemoteOutput(data=base64.b64decode(i["b64_json"]))
                if i.get("b64_json")
                else RemoteOutput(url=str(i["url"]))
                for i in items
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteFailed(f"{self.channel.name}: unreadable images answer ({exc})") from exc
        remote_id = response.headers.get("x-request-id") or f"sync-{req.order_id}"
        return Remote(remote_id, done=Status("succeeded", outputs=outputs, remote_status="200"))

    async def poll(self, remote: Remote) -> Status:
        # Synchronous: a job is never left to poll; one found after a crash cannot be read back.
        raise RemoteFailed(
            f"{self.channel.name}: the synchronous call was interrupted; its images cannot be "
            "read back from the provider"
        )
