"""KIE.ai: its jobs API (`POST /api/v1/jobs/createTask`, `GET /api/v1/jobs/recordInfo?taskId=`,
states waiting / queuing / generating / success / fail) or, with `endpoint = "qwen"`, its Qwen
endpoint as seed 001 documents it (`POST /api/v1/qwen/generate`, `GET /api/v1/qwen/record-info`,
successFlag 0 generating, 1 success, 2 failed, 3 creation failed). `{code, msg, data}` envelopes;
`Authorization: Bearer <key>`. One image per task: an order of n images is n tasks."""

from __future__ import annotations

import json
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

# Seed 001's image_size values by aspect ratio (its names: portrait_* are W:H above 1 as listed).
QWEN_SIZES = {
    "1:1": "square_hd",
    "4:3": "landscape_4_3",
    "3:4": "portrait_4_3",
    "3:2": "landscape_3_2",
    "2:3": "portrait_3_2",
    "16:9": "landscape_16_9",
    "9:16": "portrait_16_9",
    "21:9": "landscape_16_9",
}
JOB_STATES = {"waiting": "queued", "queuing": "queued", "generating": "running"}


class KieProvider(Provider):
    name: ClassVar[str] = "kie"

    @property
    def qwen(self) -> bool:
        return self.channel.endpoint == "qwen"

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}

    def _body(self, req: Request, index: int) -> dict[str, Any]:
        if self.qwen:
            body: dict[str, Any] = {
                "prompt": req.prompt,
                "image_size": QWEN_SIZES[req.aspect_ratio],
                "num_inference_steps": req.steps,
                "guidance_scale": req.guidance,
                "seed": req.seed + index,
                "output_format": "jpeg" if req.output_format in ("jpeg", "jpg") else "png",
            }
            body.update(self.channel.options)
            return body
        task_input: dict[str, Any] = {
            "prompt": req.prompt,
            "image_size": req.aspect_ratio,
            "output_format": req.output_format,
        }
        task_input.update(self.channel.options)
        return {"model": self.channel.model, "input": task_input}

    async def submit(self, req: Request) -> Remote:
        if req.reference is not None:
            raise NotAccepted(
                f"{self.channel.name}: kie takes reference images by URL only", channel_fault=False
            )
        path = "/api/v1/qwen/generate" if self.qwen else "/api/v1/jobs/createTask"

        async def create(index: int) -> str:
            response = await self.http.call(
                "POST", self.base_url + path, json=self._body(req, index), headers=self._headers()
            )
            if response.status != 200 and response.status not in (401, 402, 403, 429):
                refused = self.refusal(response, "createTask")
                if refused is not None:
                    raise refused
            return str(envelope(response, f"{self.channel.name}: createTask")["taskId"])

        return await create_tasks(self.channel.name, req.n, create)

    async def _one(self, task_id: str) -> Status:
        path = "/api/v1/qwen/record-info" if self.qwen else "/api/v1/jobs/recordInfo"
        response = await self.http.call(
            "GET", f"{self.base_url}{path}?taskId={quote(task_id)}", headers=self._headers()
        )
        if response.status != 200:
            raise RemoteFailed(f"{self.channel.name}: recordInfo answered HTTP {response.status}")
        body = response.json()
        data = body.get("data") if isinstance(body.get("data"), dict) else body
        if self.qwen:
            flag = int(data.get("successFlag", 0))
            if flag == 1:
                urls = data.get("imageUrl") or data.get("resultImageUrl") or []
                urls = [urls] if isinstance(urls, str) else list(urls)
                return Status(
                    "succeeded", outputs=[RemoteOutput(url=u) for u in urls], remote_status="1"
                )
            if flag in (2, 3):
                return Status(
                    "failed",
                    error=str(data.get("errorMessage") or data.get("msg") or "failed"),
                    billed=flag == 2,  # 3: creation failed, nothing was made
                    remote_status=str(flag),
                )
            return Status("running", remote_status="0")
        state = str(data.get("state", ""))
        if state == "success":
            result = json.loads(data.get("resultJson") or "{}")
            urls = result.get("resultUrls") or []
            return Status(
                "succeeded", outputs=[RemoteOutput(url=u) for u in urls], remote_status=state
            )
        if state == "fail":
            return Status(
                "failed",
                error=f"{data.get('failCode', '')} {data.get('failMsg', '')}".strip(),
                remote_status=state,
            )
        return Status(JOB_STATES.get(state, "queued"), remote_status=state)  # type: ignore[arg-type]

    async def poll(self, remote: Remote) -> Status:
        tasks = remote.handle.get("tasks") or [remote.remote_id]
        return combine([await self._one(t) for t in tasks])
