"""http_fetch: GET or HEAD one URL on a host the operator allowed (AE_HTTP_ALLOW), with a byte cap.

Every URL it touches, including each redirect target, must be on the allowlist; the check is on the
host name and port as written, before any connection.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from agent_engine.tool_runner.config import AllowedHost
from agent_engine.tool_runner.tools.base import Context, ToolError, builtin

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_REDIRECTS = 5
KEPT_HEADERS = ("content-type", "content-length", "content-encoding", "last-modified", "etag", "cache-control",
                "location", "retry-after")
"""Response headers returned to the caller; the rest (cookies among them) are dropped."""
USER_AGENT = "agent-engine-tool-runner/0.1 (http_fetch)"


def check_url(url: str, allow: tuple[AllowedHost, ...]) -> None:
    """Refuse a URL whose scheme is not http(s) or whose host:port is not on the allowlist."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ToolError(f"'{url}' is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ToolError(f"only http and https URLs can be fetched; '{url}' has scheme '{scheme or '(none)'}'")
    host = (parts.hostname or "").lower()
    if not host:
        raise ToolError(f"'{url}' names no host")
    default = DEFAULT_PORTS[scheme]
    port = port if port is not None else default
    if any(entry.matches(host, port, default) for entry in allow):
        return
    shown = f"[{host}]" if ":" in host else host
    entry = shown if port == default else f"{shown}:{port}"
    current = ",".join(map(str, allow)) if allow else "empty, so every host is refused"
    raise ToolError(f"host '{entry}' is not on the tool-runner's HTTP allowlist; to allow it, add '{entry}' to "
                    f"AE_HTTP_ALLOW (now: {current})")


def http_fetch(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    config = ctx.config
    method: str = args.get("method", "GET")
    cap = args.get("max_bytes", config.http_max_bytes)
    if cap > config.http_max_bytes:
        raise ToolError(f"max_bytes {cap} is over this tool-runner's cap of {config.http_max_bytes} bytes "
                        "(AE_HTTP_MAX_BYTES)")
    url: str = args["url"]
    check_url(url, config.http_allow)
    given: dict[str, str] = args.get("headers", {})
    if any(name.lower() == "host" for name in given):
        raise ToolError("the Host header cannot be set: it would reach another site than the allowed URL names")
    budget = min(float(args.get("timeout_s", 10.0)), ctx.remaining_s())
    if budget <= 0:
        raise ToolError("no time left to fetch before the tool's time limit", retryable=True)
    deadline = time.monotonic() + budget
    headers = {"user-agent": USER_AGENT, **given}
    redirects: list[str] = []
    try:
        with httpx.Client(follow_redirects=False, timeout=budget) as client:
            while True:
                with client.stream(method, url, headers=headers) as response:
                    location = response.headers.get("location")
                    if response.is_redirect and location:
                        if len(redirects) == MAX_REDIRECTS:
                            raise ToolError(f"{method} {args['url']}: more than {MAX_REDIRECTS} redirects")
                        target = urljoin(url, location)
                        try:
                            check_url(target, config.http_allow)
                        except ToolError as exc:
                            raise ToolError(f"{url} redirects to {target}, which is refused: {exc}") from None
                        redirects.append(target)
                        url = target
                        continue
                    body, truncated = _read_capped(response, cap, deadline, f"{method} {url}")
                    return {
                        "url": url, "status": response.status_code, "redirects": redirects,
                        "headers": {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers},
                        "text": body.decode(response.encoding or "utf-8", errors="replace"),
                        "bytes": len(body), "truncated": truncated,
                    }
    except httpx.TimeoutException:
        raise ToolError(f"{method} {url} timed out after {budget:g}s", retryable=True) from None
    except httpx.HTTPError as exc:
        raise ToolError(f"{method} {url} failed: {type(exc).__name__}: {exc}", retryable=True) from None


def _read_capped(response: httpx.Response, cap: int, deadline: float, what: str) -> tuple[bytes, bool]:
    """At most `cap` bytes of the body; True when there was more. Stops reading at the cap."""
    body = bytearray()
    for chunk in response.iter_bytes():
        if time.monotonic() > deadline:
            raise ToolError(f"{what} was still sending its body at the time limit", retryable=True)
        body.extend(chunk)
        if len(body) > cap:
            return bytes(body[:cap]), True
    return bytes(body), False


HTTP_FETCH = builtin(
    "http_fetch", http_fetch,
    result_schema={"type": "object", "required": ["url", "status", "redirects", "headers", "text", "bytes",
                                                  "truncated"],
                   "properties": {"url": {"type": "string"}, "status": {"type": "integer"},
                                  "redirects": {"type": "array", "items": {"type": "string"}},
                                  "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                                  "text": {"type": "string"}, "bytes": {"type": "integer", "minimum": 0},
                                  "truncated": {"type": "boolean"}}},
)
