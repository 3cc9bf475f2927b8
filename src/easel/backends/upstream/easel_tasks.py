"""Seed 002's task API (another platform of that kind, or another Easel):
`POST /api/v1/tasks/create {model_id, prompt, image_urls, aspect_ratio}` -> `data.task_id`;
`GET /api/v1/tasks/{task_id}` -> `data.task_status` 1 queued, 2 running, 3 success (image_url or
video_url), 4 failed. Credits are deducted on submit and failed tasks are refunded (seed 002), so
a failed task is unbilled and the next channel is tried. Code 0: business failure; HTTP 401: bad
key. `Authorization: Bearer <key>`. One output per task: n images are n tasks."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from easel.backends.upstream.base import (
    NotAccepted,
    Provider,
    Remote,
    RemoteFailed,
    RemoteOutput,
    Request,
    Status,
)
from easel.backends.upstream.tasks_common import combine, create_tasks, envelope

RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3")


class EaselTasksProvider(Provider):
    name: ClassVar[str] = "easel-tasks"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    async def submit(self, req: Request) -> Remote:
        if req.reference is not None:
            raise NotAccepted(
                f"{self.channel.name}: the task API takes reference images by URL only",
                channel_fault=False,
            )
        ratio = req.aspect_ratio if req.aspect_ratio in RATIOS else "1:1"
        body: dict[str, Any] = {
            "model_id": self.channel.model,
            "prompt": req.prompt,
            "image_urls": [],
            "aspect_ratio": ratio,
        }
        body.update(self.channel.options)

        async def create(_index: int) -> str:
            response = await self.http.call(
                "POST", f"{self.base_url}/api/v1/tasks/create", json=body, headers=self._headers()
            )
            if response.status != 200:
                refused = self.refusal(response, "tasks/create")
                if refused is not None:
                    raise refused
            return str(envelope(response, f"{self.channel.name}: create")["task_id"])

        return await create_tasks(self.channel.name, req.n, create)

    async def _one(self, task_id: str) -> Status:
        response = await self.http.call(
            "GET", f"{self.base_url}/api/v1/tasks/{quote(task_id)}", headers=self._headers()
        )
        if response.status != 200:
            raise RemoteFailed(f"{self.channel.name}: task query answered HTTP {response.status}")
        data = envelope(response, f"{self.channel.name}: query")
        status = int(data.get("task_status", 1))
        if status == 3:
            urls = [data.get("video_url") or data.get("image_url"), *(data.get("image_urls") or [])]
            found = list(dict.fromkeys(u for u in urls if u))[:1]
            return Status(
                "succeeded", outputs=[RemoteOutput(url=u) for u in found], remote_status="3"
            )
        if status == 4:
            return Status(
                "failed", error=str(data.get("error") or "failed"), billed=False, remote_status="4"
            )
        return Status("running" if status == 2 else "queued", remote_status=str(status))

    async def poll(self, remote: Remote) -> Status:
        tasks = remote.handle.get("tasks") or [remote.remote_id]
        return combine([await self._one(t) for t in tasks])
