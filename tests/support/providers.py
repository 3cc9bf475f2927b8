"""Real HTTP servers on loopback that speak upstream providers' documented protocols (OpenAI
Images, fal's queue, KIE's jobs API, Replicate's predictions, seed 002's task API): they check
the auth header, keep jobs that finish after `job_seconds`, answer scripted refusals (429 with
Retry-After, 5xx), take cancels, serve the images they made, and count what they were asked."""

from __future__ import annotations

import base64
import io
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

KEY = "sk-test-provider-key"


def png(width: int, height: int, shade: int = 120) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 60, 200)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Job:
    id: str
    started: float
    width: int
    height: int
    n: int
    seconds: float = 0.3
    canceled: bool = False
    failed: bool = False
    closed: bool = False  # its result was fetched (or it was canceled)


@dataclass
class FakeProvider:
    protocol: str  # openai | fal | kie | replicate | tasks
    url: str = ""
    job_seconds: float = 0.3
    job_seconds_max: float | None = None  # each job takes a random time in [job_seconds, this]
    script: list[int] = field(default_factory=list)  # the next submits' statuses (200, 429, 503)
    retry_after: str = "0"
    fail_jobs: bool = False  # accepted jobs end failed
    garbled_polls: int = 0  # the next status reads answer 200 with a proxy's HTML page
    files_url: str = ""  # where output URLs point (default: this server's own URL)
    files_redirect: str = ""  # set: output downloads answer 302 to the same path there
    submit_seconds: float = 0.0  # an async protocol's accepted submit answers this late
    submits: int = 0  # accepted submits
    refused: int = 0
    polls: int = 0
    cancels: int = 0
    peak: int = 0  # jobs running at once
    open: int = 0  # jobs submitted whose result was not fetched yet (the client's in flight)
    peak_open: int = 0
    prompts: Counter[str] = field(default_factory=Counter)  # accepted submits per prompt
    jobs: dict[str, Job] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def running(self, now: float) -> int:
        return sum(1 for j in self.jobs.values() if not j.canceled and now - j.started < j.seconds)

    def new_job(self, width: int, height: int, n: int, prompt: str = "") -> tuple[Job | None, int]:
        """A job, or the scripted refusal status."""
        with self.lock:
            status = self.script.pop(0) if self.script else 200
            if status != 200:
                self.refused += 1
                return None, status
            seconds = self.job_seconds
            if self.job_seconds_max is not None:
                seconds = random.uniform(self.job_seconds, self.job_seconds_max)
            job = Job(uuid.uuid4().hex[:12], time.monotonic(), width, height, n, seconds)
            self.jobs[job.id] = job
            self.submits += 1
            self.prompts[prompt] += 1
            self.open += 1
            self.peak_open = max(self.peak_open, self.open)
            self.peak = max(self.peak, self.running(time.monotonic()))
            return job, 200

    def close(self, job: Job) -> None:
        """The client fetched the job's result (or canceled it): no longer in flight."""
        with self.lock:
            if not job.closed:
                job.closed = True
                self.open -= 1

    def state(self, job: Job) -> str:
        if job.canceled:
            return "canceled"
        if time.monotonic() - job.started < job.seconds:
            return "running"
        return "failed" if self.fail_jobs else "done"

    def image_urls(self, job: Job) -> list[str]:
        base = self.files_url or self.url
        return [f"{base}/files/{job.id}-{i}.png" for i in range(job.n)]


def _size(body: dict[str, Any]) -> tuple[int, int]:
    if isinstance(body.get("size"), str):
        w, h = body["size"].split("x")
        return int(w), int(h)
    inner = body.get("input") or body
    if isinstance(inner.get("image_size"), dict):
        return int(inner["image_size"]["width"]), int(inner["image_size"]["height"])
    return int(inner.get("width", 256)), int(inner.get("height", 256))


def handler_for(box: list[FakeProvider]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The headers and the body go out in two writes: with Nagle's algorithm the body waited
        # for the client's delayed ACK (about 40 ms on loopback), which no real provider adds.
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header(
                "content-type", "image/png" if isinstance(body, bytes) else "application/json"
            )
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            return json.loads(raw) if raw else {}

        def _authorized(self, p: FakeProvider) -> bool:
            expected = f"Key {KEY}" if p.protocol == "fal" else f"Bearer {KEY}"
            if self.headers.get("authorization") == expected:
                return True
            self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
            return False

        def _refuse(self, p: FakeProvider, status: int) -> None:
            headers = {"retry-after": p.retry_after} if status in (429, 503) else {}
            if p.protocol in ("kie", "tasks"):
                self._send(status, {"code": status, "msg": "busy"}, headers)
            else:
                self._send(status, {"error": {"message": "busy", "type": "server_error"}}, headers)

        def do_GET(self) -> None:
            p = box[0]
            path = urlsplit(self.path)
            if path.path.startswith("/files/") and p.files_redirect:
                self.send_response(302)
                self.send_header("location", p.files_redirect + path.path)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            if path.path.startswith("/files/"):
                job_id, index = (
                    path.path.removeprefix("/files/").removesuffix(".png").rsplit("-", 1)
                )
                job = p.jobs[job_id]
                self._send(200, png(job.width, job.height, 40 + int(index)))
                return
            if not self._authorized(p):
                return
            with p.lock:
                p.polls += 1
                garbled = p.garbled_polls > 0
                p.garbled_polls -= garbled
            if garbled:
                self._send(200, b"<html><body>502 Bad Gateway</body></html>")
                return
            query = parse_qs(path.query)
            if p.protocol == "fal":
                parts = path.path.strip("/").split("/")
                job = p.jobs[parts[-2] if parts[-1] == "status" else parts[-1]]
                state = p.state(job)
                if parts[-1] == "status":
                    if state == "running":
                        self._send(200, {"status": "IN_PROGRESS"})
                    else:
                        self._send(200, {"status": "COMPLETED"})
                    return
                if state == "failed":
                    self._send(500, {"detail": "generation failed"})
                    return
                images = [{"url": u, "content_type": "image/png"} for u in p.image_urls(job)]
                p.close(job)
                self._send(200, {"images": images, "seed": 1})
                return
            if p.protocol == "kie":
                job = p.jobs[query["taskId"][0]]
                state = {
                    "running": "generating",
                    "done": "success",
                    "failed": "fail",
                    "canceled": "fail",
                }[p.state(job)]
                data = {"taskId": job.id, "state": state}
                if state == "success":
                    data["resultJson"] = json.dumps({"resultUrls": p.image_urls(job)})
                    p.close(job)
                if state == "fail":
                    data |= {"failCode": "500", "failMsg": "generation failed"}
                self._send(200, {"code": 200, "msg": "success", "data": data})
                return
            if p.protocol == "replicate":
                job = p.jobs[path.path.rstrip("/").split("/")[-1]]
                prediction = self._prediction(p, job)
                if prediction["status"] == "succeeded":
                    p.close(job)
                self._send(200, prediction)
                return
            if p.protocol == "tasks":
                job = p.jobs[path.path.rstrip("/").split("/")[-1]]
                status = {"running": 2, "done": 3, "failed": 4, "canceled": 4}[p.state(job)]
                data = {"task_id": job.id, "task_status": status}
                if status == 3:
                    data["image_url"] = p.image_urls(job)[0]
                    p.close(job)
                self._send(200, {"code": 200, "msg": "ok", "data": data})
                return
            self._send(404, {"error": "not found"})

        def _prediction(self, p: FakeProvider, job: Job) -> dict[str, Any]:
            state = {
                "running": "processing",
                "done": "succeeded",
                "failed": "failed",
                "canceled": "canceled",
            }[p.state(job)]
            return {
                "id": job.id,
                "status": state,
                "output": p.image_urls(job) if state == "succeeded" else None,
                "error": "generation failed" if state == "failed" else None,
                "metrics": {"predict_time": 1.0} if state == "failed" else {},
                "urls": {
                    "get": f"{p.url}/v1/predictions/{job.id}",
                    "cancel": f"{p.url}/v1/predictions/{job.id}/cancel",
                },
            }

        def do_PUT(self) -> None:
            p = box[0]
            if not self._authorized(p):
                return
            job = p.jobs[urlsplit(self.path).path.strip("/").split("/")[-2]]
            job.canceled = True
            p.close(job)
            with p.lock:
                p.cancels += 1
            self._send(202, {"status": "CANCELLATION_REQUESTED"})

        def do_POST(self) -> None:
            p = box[0]
            body = self._body()
            if not self._authorized(p):
                return
            path = urlsplit(self.path).path
            if p.protocol == "replicate" and path.endswith("/cancel"):
                p.jobs[path.split("/")[-2]].canceled = True
                p.close(p.jobs[path.split("/")[-2]])
                with p.lock:
                    p.cancels += 1
                self._send(200, {})
                return
            width, height = _size(body)
            n = int(
                body.get("n")
                or body.get("num_images")
                or (body.get("input") or {}).get("num_outputs")
                or 1
            )
            prompt = str(body.get("prompt") or (body.get("input") or {}).get("prompt") or "")
            job, status = p.new_job(width, height, n, prompt)
            if job is None:
                self._refuse(p, status)
                return
            time.sleep(p.submit_seconds)
            if p.protocol == "openai":
                time.sleep(job.seconds)
                data = [
                    {"b64_json": base64.b64encode(png(width, height, 40 + i)).decode()}
                    for i in range(n)
                ]
                p.close(job)
                self._send(200, {"created": int(time.time()), "data": data})
            elif p.protocol == "fal":
                base = f"{p.url}{path}/requests/{job.id}"
                self._send(
                    200,
                    {
                        "request_id": job.id,
                        "status_url": f"{base}/status",
                        "response_url": base,
                        "cancel_url": f"{base}/cancel",
                        "queue_position": 0,
                    },
                )
            elif p.protocol == "kie":
                self._send(200, {"code": 200, "msg": "success", "data": {"taskId": job.id}})
            elif p.protocol == "replicate":
                self._send(201, self._prediction(p, job))
            else:
                self._send(
                    200, {"code": 200, "msg": "ok", "data": {"task_id": job.id, "credits": 15}}
                )

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # many clients connect at once (the default backlog is 5)


@contextmanager
def provider(protocol: str, **options: Any) -> Iterator[FakeProvider]:
    box = [FakeProvider(protocol, **options)]
    http = _Server(("127.0.0.1", 0), handler_for(box))
    http.daemon_threads = True
    box[0].url = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield box[0]
    finally:
        http.shutdown()
        http.server_close()


def channel_table(
    model_id: str, provider_name: str, base_url: str, model: str, priority: int = 1, **extra: Any
) -> str:
    """One `[[models.<id>.channels]]` table with fast polling, for tiny_catalog(extra=...)."""
    lines = [
        f"[[models.{model_id}.channels]]",
        f'provider = "{provider_name}"',
        f'base_url = "{base_url}"',
        'api_key_env = "EASEL_TEST_PROVIDER_KEY"',
        f'model = "{model}"',
        f"priority = {priority}",
        "poll_interval = 0.05",
        "cost_per_image = 0.04",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def local_channel(model_id: str, local: str = "sdxl-general", priority: int = 9) -> str:
    head = f"[[models.{model_id}.channels]]\n"
    return head + f'provider = "local"\nmodel = "{local}"\npriority = {priority}\n'


def upstream_model(model_id: str, *channels: str) -> str:
    head = f'[models.{model_id}]\nfamily = "upstream"\nsteps = 2\nwidth = 256\nheight = 256\n'
    return head + "".join(channels)
