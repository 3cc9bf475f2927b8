"""A Hugging Face hub on loopback: what `huggingface_hub` asks of HF_ENDPOINT, for one folder.

`GET /api/models/{repo}[/revision/{rev}]` (model info with each file's size and, for weights,
its LFS sha256), `HEAD`/`GET /{repo}/resolve/{rev}/{path}` with X-Repo-Commit, ETag,
Content-Length, Accept-Ranges and `Range` requests answered 206. `delay` slows each file's body
(seconds per file), so a download is seen in progress.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt")


@dataclass
class Hub:
    url: str
    repo_id: str
    commit: str
    requests: list[str] = field(default_factory=list)


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@contextmanager
def hf_hub(folder: Path, repo_id: str, delay: float = 0.0) -> Iterator[Hub]:
    files = _files(folder)
    commit = hashlib.sha1(b"".join(files.values())).hexdigest()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send_json(self, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _info(self) -> None:
            siblings = []
            for name, data in files.items():
                entry: dict[str, object] = {"rfilename": name, "size": len(data)}
                if name.endswith(LFS_SUFFIXES):
                    sha = hashlib.sha256(data).hexdigest()
                    entry["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
                siblings.append(entry)
            self._send_json({"id": repo_id, "modelId": repo_id, "sha": commit,
                             "private": False, "siblings": siblings})  # fmt: skip

        def _resolve(self, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            prefix = f"/{repo_id}/resolve/"
            rest = path[len(prefix) :]
            _revision, _, name = rest.partition("/")
            data = files.get(name)
            if data is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            etag = (
                hashlib.sha256(data).hexdigest()
                if name.endswith(LFS_SUFFIXES)
                else hashlib.sha1(data).hexdigest()
            )
            start = 0
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                start = int(ranged[6:].split("-")[0] or 0)
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if head:
                return
            if delay and len(body) > 4096:
                time.sleep(delay)
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            hub.requests.append("HEAD " + self.path)
            self._resolve(head=True)

        def do_GET(self) -> None:
            hub.requests.append("GET " + self.path)
            path = urlparse(self.path).path
            if path.startswith(f"/api/models/{repo_id}"):
                self._info()
            elif path.startswith(f"/{repo_id}/resolve/"):
                self._resolve(head=False)
            else:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub = Hub(f"http://127.0.0.1:{server.server_address[1]}", repo_id, commit)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
