"""The health port as a kubelet (or `agentctl ps`) sees it: /livez, /readyz naming what is not ready, and
clear errors for a bad AE_HEALTH_PORT. A real socket, no servers."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from agent_engine.runtime import health


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    said = json.loads(body)
    if method == "GET" and path.startswith(("/livez", "/readyz")):  # each answer names the process answering
        assert said.pop("pid") == os.getpid()
    return int(head.split()[1]), said


async def _serving(checks: dict[str, health.Check], *, taking_work: bool = True,
                   ) -> tuple[health.Health, asyncio.Server, int]:
    registry = health.Health()
    registry.serving = taking_work
    for name, check in checks.items():
        registry.add(name, check)
    server = await health.serve(registry, 0, "127.0.0.1")
    return registry, server, server.sockets[0].getsockname()[1]


def _says(problem: str | None) -> health.Check:
    async def check() -> str | None:
        return problem
    return check


async def test_livez_answers_while_readyz_says_the_process_is_still_starting():
    registry, server, port = await _serving({"nats": _says(None)}, taking_work=False)
    try:
        assert await _get(port, "/livez") == (200, {"status": "alive"})
        # connected, but not consuming yet (the router reads its open dispatches first): not ready
        assert await _get(port, "/readyz") == (503, {"status": "not ready", "failing": {"process": "starting"}})
        registry.serving = True
        assert await _get(port, "/readyz") == (200, {"status": "ready"})
    finally:
        server.close()


async def test_readyz_is_ready_only_when_every_check_passes_and_names_each_one_that_fails():
    registry, server, port = await _serving({"nats": _says(None), "consumer router": _says(None)})
    try:
        assert await _get(port, "/readyz?verbose") == (200, {"status": "ready"})
        registry.add("postgres", _says("PostgreSQL does not answer: connection refused"))
        status, body = await _get(port, "/readyz")
        assert status == 503 and body["failing"] == {"postgres": "PostgreSQL does not answer: connection refused"}
        registry.remove("postgres")
        registry.draining = True
        assert await _get(port, "/readyz") == (503, {"status": "not ready",
                                                     "failing": {"process": "draining after SIGTERM"}})
    finally:
        server.close()


async def test_a_check_that_raises_or_hangs_is_reported_as_failing_not_as_an_error_of_the_endpoint():
    async def broken() -> str | None:
        raise RuntimeError("boom")

    async def hangs() -> str | None:
        await asyncio.sleep(60)
        return None

    _, server, port = await _serving({"broken": broken, "hangs": hangs})
    try:
        status, body = await _get(port, "/readyz")
        assert status == 503
        assert body["failing"] == {"broken": "check failed: RuntimeError: boom", "hangs": "check timed out after 3s"}
    finally:
        server.close()


async def test_unknown_paths_and_methods_get_an_error_that_says_what_to_ask_instead():
    _, server, port = await _serving({})
    try:
        assert await _get(port, "/metricz") == (404, {"error": "no such path '/metricz'; try /livez, /readyz or /metrics"})
        assert await _get(port, "/livez", "POST") == (405, {"error": "method POST not allowed; use GET"})
    finally:
        server.close()


async def test_a_client_that_sends_garbage_or_nothing_does_not_stop_the_server():
    _, server, port = await _serving({})
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x00" * 9000)  # over the request limit, no end of headers
        await writer.drain()
        writer.close()
        assert (await _get(port, "/livez"))[0] == 200
    finally:
        server.close()


async def test_a_cached_check_asks_at_most_once_per_period():
    asked = []

    async def remote() -> str | None:
        asked.append(1)
        return None

    check = health.cached(remote, every_s=60)
    assert [await check() for _ in range(5)] == [None] * 5
    assert len(asked) == 1


async def test_probes_at_once_share_one_question_and_a_server_that_hangs_gets_no_more():
    asked = []
    answer = asyncio.Event()

    async def hangs() -> str | None:
        asked.append(1)
        await answer.wait()
        return "PostgreSQL does not answer: timeout"

    check = health.cached(hangs, every_s=0)
    registry = health.Health()
    registry.serving = True
    registry.add("postgres", check)
    probes = [asyncio.ensure_future(registry.problems()) for _ in range(50)]
    await asyncio.sleep(0.1)
    assert len(asked) == 1, "each probe asked the server itself"
    answer.set()
    said = await asyncio.gather(*probes)
    assert all(p == {"postgres": "PostgreSQL does not answer: timeout"} for p in said)


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1", "80.5"])
def test_a_bad_health_port_stops_the_service_with_a_message_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("AE_HEALTH_PORT", value)
    with pytest.raises(SystemExit, match="AE_HEALTH_PORT"):
        health.port_from_env()


def test_no_health_port_unless_one_is_asked_for(monkeypatch):
    monkeypatch.delenv("AE_HEALTH_PORT", raising=False)
    assert health.port_from_env() is None
    monkeypatch.setenv("AE_HEALTH_PORT", " 8080 ")
    assert health.port_from_env() == 8080


async def test_a_port_already_taken_is_named_in_the_error():
    _, server, port = await _serving({})
    try:
        with pytest.raises(SystemExit, match=f"AE_HEALTH_PORT={port}: cannot listen"):
            await health.serve(health.Health(), port, "127.0.0.1")
    finally:
        server.close()
