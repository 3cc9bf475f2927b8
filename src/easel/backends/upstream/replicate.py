"""Replicate's predictions: `POST /v1/models/{owner}/{name}/predictions` (or `/v1/predictions`
with a version for `owner/name:version`) with `Prefer: wait` -> a prediction whose `status` is
starting / processing / succeeded / failed / canceled; until it ends, `urls.get` is polled and
`urls.cancel` stops it. `output` is a URL or a list of them. `Authorization: Bearer <token>`."""

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

STATES = {"starting": "queued", "processing": "running"}


def _outputs(output: Any) -> list[RemoteOutput]:
    items = output if isinstance(output, list) else [output]
    found = []
    for item in items:
        if isinstance(item, str) and item.startswith("data:"):
            found.append(RemoteOutput(data=base64.b64decode(item.split(",", 1)[1])))
        elif isinstance(item, str):
            found.append(RemoteOutput(url=item))
    return found


class ReplicateProvider(Provider):
    name: ClassVar[str] = "replicate"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    def _status(self, data: dict[str, Any]) -> Status:
        state = str(data.get("status", ""))
        if state == "succeeded":
            return Status("succeeded", outputs=_outputs(data.get("output")), remote_status=state)
        if state in ("failed", "canceled"):
            predict = (data.get("metrics") or {}).get("predict_time")
            return Status(
                "failed",
                error=str(data.get("error") or state),
                billed=bool(predict),  # charged for the time it ran
                remote_status=state,
            )
        return Status(STATES.get(state, "queued"), remote_status=state)  # type: ignore[arg-type]

    async def submit(self, req: Request) -> Remote:
        model_input: dict[str, Any] = {
            "prompt": req.prompt,
            "width": req.width,
            "height": req.height,
            "aspect_ratio": req.aspect_ratio,
            "num_outputs": req.n,
            "seed": req.seed,
            "output_format": "jpg" if req.output_format in ("jpeg", "jpg") else req.output_format,
        }
        if req.reference is not None:
            model_input["image"] = (
                "data:image/png;base64," + base64.b64encode(req.reference).decode()
            )
        model_input.update(self.channel.options.get("input", {}))
        wait = int(self.channel.options.get("wait", 60))
        headers = self._headers() | {"prefer": f"wait={wait}"}
        model, _, version = self.channel.model.partition(":")
        if version:
            url, body = f"{self.base_url}/predictions", {"version": version, "input": model_input}
        else:
            url, body = f"{self.base_url}/models/{model}/predictions", {"input": model_input}
        response = await self.http.call("POST", url, json=body, headers=headers, timeout=wait + 30)
        refused = self.refusal(response, "predictions")
        if refused is not None:
            raise refused
        try:
            data = response.json()
            handle = {"get": str(data["urls"]["get"]), "cancel": str(data["urls"]["cancel"])}
            remote = Remote(str(data["id"]), handle=handle)
        except (ValueError, KeyError, TypeError) as exc:
            raise RemoteFailed(f"{self.channel.name}: unreadable prediction ({exc})") from exc
        status = self._status(data)
        if status.state in ("succeeded", "failed"):
            remote.done = status
        return remote

    async def poll(self, remote: Remote) -> Status:
        response = await self.http.call("GET", remote.handle["get"], headers=self._headers())
        if response.status != 200:
            raise RemoteFailed(f"{self.channel.name}: prediction answered HTTP {response.status}")
        return self._status(response.json())

    async def cancel(self, remote: Remote) -> None:
        await self.http.call("POST", remote.handle["cancel"], headers=self._headers())
