"""An OpenAI-compatible chat completions server on loopback, in a thread: it answers the JSON the
enhancer's system prompt asks for, after `delay` seconds, and keeps every request body."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class ChatServer:
    url: str = ""
    delay: float = 0.0
    pad: int = 0  # characters added to the answer's prompt
    requests: list[dict[str, Any]] = field(default_factory=list)


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            server.requests.append(body | {"authorization": self.headers.get("Authorization")})
            time.sleep(server.delay)
            if self.path != "/v1/chat/completions":
                self.send_error(404)
                return
            user = body["messages"][-1]["content"].split("Prompt: ", 1)[1]
            answer = {
                "prompt": f"{user}, golden hour light, 35mm photo, seed {body['seed']}"
                + "x" * server.pad,
                "negative_prompt": "blurry, lowres",
            }
            reply = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": json.dumps(answer)},
                    }
                ],
            }
            data = json.dumps(reply).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped waiting (its timeout)

    return Handler


@contextmanager
def chat_server(delay: float = 0.0) -> Iterator[ChatServer]:
    state = ChatServer(delay=delay)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
