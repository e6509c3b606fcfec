"""Local HTTP servers that speak just enough of the Anthropic Messages API and the OpenAI chat-completions
API for the real clients (the `anthropic` SDK, our httpx adapter) to run their whole code path.

A server answers each POST with the next scripted `Reply`, then with its `default` once the script is
used up, and records every request (path, lower-cased headers, JSON body).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    """A JSON value, or a str sent as is (to test malformed bodies)."""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeServer:
    default: Reply
    port: int = 0
    script: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    routes: dict[str, Reply] = field(default_factory=dict)
    """Replies by path that bypass the script (e.g. /v1/messages/count_tokens); their requests are recorded too."""
    respond: Any = None
    """Optional function (request dict) -> Reply | None, asked before the script: a model that answers by what
    it is sent (None: fall through to the script)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # the default reply's parts, settable one by one
    @property
    def status(self) -> int:
        return self.default.status

    @status.setter
    def status(self, value: int) -> None:
        self.default.status = value

    @property
    def body(self) -> Any:
        return self.default.body

    @body.setter
    def body(self, value: Any) -> None:
        self.default.body = value

    def then(self, *replies: Reply) -> FakeServer:
        self.script.extend(replies)
        return self

    def next_reply(self, request: dict[str, Any]) -> Reply:
        with self.lock:
            self.requests.append(request)
            if request["path"] in self.routes:
                return self.routes[request["path"]]
            if self.respond is not None:
                chosen = self.respond(request)
                if chosen is not None:
                    return chosen  # type: ignore[no-any-return]
            return self.script.pop(0) if self.script else self.default

    def calls(self, path: str = "/v1/messages") -> list[dict[str, Any]]:
        """The JSON bodies of the requests sent to `path`, in order."""
        return [r["json"] for r in self.requests if r["path"] == path]


@contextmanager
def serve(state: FakeServer) -> Iterator[FakeServer]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            reply = state.next_reply({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "json": json.loads(raw or b"{}")})
            payload = reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --- Anthropic Messages API -------------------------------------------------------------------

def anthropic_message(text: str | None = '{"goal": "x"}', *, tool_use: list[dict[str, Any]] | None = None,
                      model: str = "claude-sonnet-4-5", input_tokens: int = 10, output_tokens: int = 5,
                      cache_read: int = 3, cache_write: int = 2) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text is not None else []
    content += [{"type": "tool_use", "id": f"toolu_{i}", "name": t["name"], "input": t["input"]}
                for i, t in enumerate(tool_use or [])]
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": "tool_use" if tool_use else "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens,
                      "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write}}


def anthropic_error(status: int, kind: str, message: str, **headers: str) -> Reply:
    return Reply(status, {"type": "error", "error": {"type": kind, "message": message}},
                 {k.replace("_", "-"): v for k, v in headers.items()})


def rate_limited(retry_after: str = "0.05") -> Reply:
    return anthropic_error(429, "rate_limit_error", "Number of request tokens has exceeded your rate limit",
                           retry_after=retry_after)


def overloaded() -> Reply:
    return anthropic_error(529, "overloaded_error", "Overloaded")


def fake_anthropic_server() -> FakeServer:
    return FakeServer(Reply(200, anthropic_message()))


# --- OpenAI chat completions --------------------------------------------------------------------

def openai_completion(content: str | None = '{"goal": "x"}', *, model: str = "gpt-4o-mini",
                      prompt_tokens: int = 20, completion_tokens: int = 7, cached: int | None = 8,
                      tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [{"id": f"call_{i}", "type": "function",
                                  "function": {"name": t["name"], "arguments": json.dumps(t["input"])}}
                                 for i, t in enumerate(tool_calls)]
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1767225600, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": usage}


def openai_error(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, {"error": {"message": message, "type": "server_error" if status >= 500 else "requests",
                                    "code": None}}, {k.replace("_", "-"): v for k, v in headers.items()})


def fake_openai_server() -> FakeServer:
    return FakeServer(Reply(200, openai_completion()))
