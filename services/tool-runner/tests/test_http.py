"""http_fetch against a real local HTTP server: the allowlist, redirects, the byte cap, timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent_engine.tool_runner.config import AllowedHost, ToolConfig, parse_allowlist
from agent_engine.tool_runner.tools import REGISTRY, Context, ToolError
from agent_engine.tool_runner.tools.http import check_url, http_fetch

BIG = b"0123456789" * 10_000


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)),
                            **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        if self.path == "/hello":
            self._send(200, "héllo\n".encode(), {"Set-Cookie": "session=secret", "ETag": '"v1"'})
        elif self.path == "/agent":
            self._send(200, self.headers.get("User-Agent", "").encode() + b"|" +
                       self.headers.get("Accept", "").encode())
        elif self.path == "/big":
            self._send(200, BIG)
        elif self.path == "/missing":
            self._send(404, b"no such page")
        elif self.path == "/redirect-in":
            self._send(302, b"", {"Location": "/hello"})
        elif self.path == "/redirect-out":
            self._send(302, b"", {"Location": f"http://localhost:{port}/hello"})
        elif self.path == "/loop":
            self._send(302, b"", {"Location": "/loop"})
        elif self.path == "/slow":
            time.sleep(2)
            self._send(200, b"late")
        else:
            self._send(500, b"unexpected path")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def ctx_for(allow: str, **limits: Any) -> Context:
    return Context(ToolConfig(workspace=Path(".").resolve(), http_allow=parse_allowlist(allow), **limits), 30.0)


def test_get_an_allowed_url(server: str) -> None:
    out = http_fetch({"url": f"http://{server}/hello"}, ctx_for(server))
    assert (out["status"], out["text"], out["bytes"], out["truncated"]) == (200, "héllo\n", 7, False)
    assert out["headers"]["content-type"] == "text/plain; charset=utf-8"
    assert out["headers"]["etag"] == '"v1"'
    assert "set-cookie" not in out["headers"]  # only a subset of headers comes back
    assert out["url"] == f"http://{server}/hello" and out["redirects"] == []
    REGISTRY["http_fetch"].check_result(out)


def test_head_returns_headers_and_no_body(server: str) -> None:
    out = http_fetch({"url": f"http://{server}/hello", "method": "HEAD"}, ctx_for(server))
    assert (out["status"], out["text"], out["headers"]["content-length"]) == (200, "", "7")


def test_request_headers_are_sent(server: str) -> None:
    out = http_fetch({"url": f"http://{server}/agent", "headers": {"Accept": "text/csv"}}, ctx_for(server))
    assert out["text"].startswith("agent-engine-tool-runner/") and out["text"].endswith("|text/csv")


def test_an_error_status_is_a_result_not_a_failure(server: str) -> None:
    out = http_fetch({"url": f"http://{server}/missing"}, ctx_for(server))
    assert (out["status"], out["text"]) == (404, "no such page")


def test_an_empty_allowlist_refuses_every_host_and_says_how_to_allow(server: str) -> None:
    with pytest.raises(ToolError) as info:
        http_fetch({"url": f"http://{server}/hello"}, ctx_for(""))
    assert str(info.value) == (f"host '{server}' is not on the tool-runner's HTTP allowlist; to allow it, add "
                               f"'{server}' to AE_HTTP_ALLOW (now: empty, so every host is refused)")


def test_a_host_without_port_allows_only_the_default_port(server: str) -> None:
    with pytest.raises(ToolError, match=f"add '{server}' to AE_HTTP_ALLOW \\(now: 127.0.0.1\\)"):
        http_fetch({"url": f"http://{server}/hello"}, ctx_for("127.0.0.1"))


def test_another_host_on_the_same_port_is_refused(server: str) -> None:
    port = server.split(":")[1]
    with pytest.raises(ToolError, match=f"host 'localhost:{port}' is not on"):
        http_fetch({"url": f"http://localhost:{port}/hello"}, ctx_for(server))


@pytest.mark.parametrize(("url", "message"), [
    ("file:///etc/passwd", "only http and https URLs can be fetched; 'file:///etc/passwd' has scheme 'file'"),
    ("ftp://example.com/x", "has scheme 'ftp'"),
    ("example.com/x", "has scheme '(none)'"),
    ("http:///nohost", "'http:///nohost' names no host"),
    ("http://example.com:99999/", "is not a valid URL"),
])
def test_bad_urls_are_refused_before_any_connection(url: str, message: str) -> None:
    with pytest.raises(ToolError, match=message.replace("(", "\\(").replace(")", "\\)")):
        http_fetch({"url": url}, ctx_for("example.com"))


def test_a_redirect_within_the_allowlist_is_followed(server: str) -> None:
    out = http_fetch({"url": f"http://{server}/redirect-in"}, ctx_for(server))
    assert (out["status"], out["text"], out["url"]) == (200, "héllo\n", f"http://{server}/hello")
    assert out["redirects"] == [f"http://{server}/hello"]


def test_a_redirect_to_a_host_not_allowed_is_refused(server: str) -> None:
    port = server.split(":")[1]
    with pytest.raises(ToolError) as info:
        http_fetch({"url": f"http://{server}/redirect-out"}, ctx_for(server))
    assert f"redirects to http://localhost:{port}/hello, which is refused" in str(info.value)
    assert f"host 'localhost:{port}' is not on the tool-runner's HTTP allowlist" in str(info.value)


def test_a_redirect_loop_stops(server: str) -> None:
    with pytest.raises(ToolError, match="more than 5 redirects"):
        http_fetch({"url": f"http://{server}/loop"}, ctx_for(server))


def test_a_big_body_is_cut_at_max_bytes_with_a_flag(server: str) -> None:
    out = http_fetch({"url": f"http://{server}/big", "max_bytes": 25}, ctx_for(server))
    assert (out["text"], out["bytes"], out["truncated"]) == ("0123456789012345678901234", 25, True)


def test_the_configured_cap_applies_and_cannot_be_raised(server: str) -> None:
    out = http_fetch({"url": f"http://{server}/big"}, ctx_for(server, http_max_bytes=1000))
    assert (out["bytes"], out["truncated"]) == (1000, True)
    with pytest.raises(ToolError, match="max_bytes 5000 is over this tool-runner's cap of 1000 bytes"):
        http_fetch({"url": f"http://{server}/big", "max_bytes": 5000}, ctx_for(server, http_max_bytes=1000))


def test_a_slow_server_times_out_retryably(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(ToolError, match=f"GET http://{server}/slow timed out after 0.3s") as info:
        http_fetch({"url": f"http://{server}/slow", "timeout_s": 0.3}, ctx_for(server))
    assert info.value.retryable
    assert time.monotonic() - started < 1.9


def test_a_closed_port_is_a_retryable_failure() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    with pytest.raises(ToolError, match=f"GET http://127.0.0.1:{port}/ failed: ConnectError") as info:
        http_fetch({"url": f"http://127.0.0.1:{port}/"}, ctx_for(f"127.0.0.1:{port}"))
    assert info.value.retryable


def test_the_host_header_cannot_be_overridden(server: str) -> None:
    with pytest.raises(ToolError, match="the Host header cannot be set"):
        http_fetch({"url": f"http://{server}/hello", "headers": {"host": "internal"}}, ctx_for(server))


# --- the allowlist ----------------------------------------------------------------------------

def test_allowlist_parsing() -> None:
    assert parse_allowlist(" API.example.com , b.example:8080,*.example.org,[::1]:9000, ") == (
        AllowedHost("api.example.com"), AllowedHost("b.example", 8080), AllowedHost("*.example.org"),
        AllowedHost("::1", 9000))


@pytest.mark.parametrize("entry", ["http://a.example", "a.example/path", "a b", "a.example:0", "a.example:70000"])
def test_malformed_allowlist_entries_are_named(entry: str) -> None:
    with pytest.raises(ValueError, match=f"AE_HTTP_ALLOW: '{entry}'"):
        parse_allowlist(f"ok.example,{entry}")


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://api.example.com/x", True),
    ("http://api.example.com/x", True),
    ("https://api.example.com:8443/x", False),
    ("http://b.example:8080/", True),
    ("http://b.example/", False),
    ("https://docs.example.org/", True),
    ("https://deep.docs.example.org/", True),
    ("https://example.org/", False),  # *.domain means subdomains only
    ("https://evilexample.org/", False),
    ("http://[::1]:9000/", True),
    ("https://API.EXAMPLE.COM/", True),
])
def test_allowlist_matching(url: str, allowed: bool) -> None:
    allow = parse_allowlist("api.example.com,b.example:8080,*.example.org,[::1]:9000")
    if allowed:
        check_url(url, allow)
    else:
        with pytest.raises(ToolError, match="is not on the tool-runner's HTTP allowlist"):
            check_url(url, allow)
