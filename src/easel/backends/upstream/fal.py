"""fal.ai's queue API: `POST https://queue.fal.run/{app}` with the app's input -> `request_id`,
`status_url`, `response_url`, `cancel_url`; the status is `IN_QUEUE` (with `queue_position`),
`IN_PROGRESS` or `COMPLETED`; the result (`images[].url`, `video.url`) is read from
`response_url`; `PUT cancel_url` stops a queued request. `Authorization: Key <key>`."""

from __future__ import annotations

import base64
from typing import Any, ClassVar

from easel.backends.upstream.base import (
    Provider,
    Remote,
    RemoteFailed,
    RemoteOutput,
    Request,
    Status,
)


class FalProvider(Provider):
    name: ClassVar[str] = "fal"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Key {self.key}"}

    async def submit(self, req: Request) -> Remote:
        body: dict[str, Any] = {
            "prompt": req.prompt,
            "image_size": {"width": req.width, "height": req.height},
            "num_images": req.n,
            "seed": req.seed,
            "output_format": "jpeg" if req.output_format in ("jpeg", "jpg") else "png",
        }
        if req.negative_prompt:
            body["negative_prompt"] = req.negative_prompt
        if req.reference is not None:
            body["image_url"] = "data:image/png;base64," + base64.b64encode(req.reference).decode()
        body.update(self.channel.options)
        response = await self.http.call(
            "POST", f"{self.base_url}/{self.channel.model}", json=body, headers=self._headers()
        )
        refused = self.refusal(response, "queue submit")
        if refused is not None:
            raise refused
        try:
            data = response.json()
            handle = {k: str(data[k]) for k in ("status_url", "response_url", "cancel_url")}
            return Remote(str(data["request_id"]), handle=handle)
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteFailed(f"{self.channel.name}: unreadable queue answer ({exc})") from exc

    async def poll(self, remote: Remote) -> Status:
        response = await self.http.call("GET", remote.handle["status_url"], headers=self._headers())
        if response.status not in (200, 202):
            raise RemoteFailed(f"{self.channel.name}: status answered HTTP {response.status}")
        data = response.json()
        state = str(data.get("status", ""))
        if state == "IN_QUEUE":
            return Status("queued", queue_position=data.get("queue_position"), remote_status=state)
        if state == "IN_PROGRESS":
            return Status("running", remote_status=state)
        if state != "COMPLETED":
            raise RemoteFailed(f"{self.channel.name}: unknown queue status {state!r}")
        if data.get("error"):
            return Status("failed", error=str(data["error"]), remote_status=state)
        result = await self.http.call("GET", remote.handle["response_url"], headers=self._headers())
        if result.status != 200:
            detail = result.body[:300].decode("utf-8", "replace")
            return Status(
                "failed", error=f"result HTTP {result.status}: {detail}", remote_status=state
            )
        output = result.json()
        items = list(output.get("images") or [])
        if output.get("video"):
            items.append(output["video"])
        outputs = [RemoteOutput(url=str(i["url"])) for i in items if i.get("url")]
        return Status("succeeded", outputs=outputs, remote_status=state)

    async def cancel(self, remote: Remote) -> None:
        await self.http.call("PUT", remote.handle["cancel_url"], headers=self._headers())
