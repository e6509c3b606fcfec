"""MCP tools: the servers whoever deploys the tool-runner declares (`AE_MCP_SERVERS`, never a workflow: a tenant
must not be able to make the tool-runner start a command), one stdio session to each, and each of their tools
as a `Tool` the runner treats like a built-in: argument and result schemas, idempotency, its time limit.

A call runs in one of the runner's worker threads like any tool; the session lives on the event loop, so the
thread hands the call to the loop and waits. A server that dies is started again by the next call; the call
that was running errors (retryable for an idempotent call, as any tool failure). A call that provably never
reached a server (`NotReached`: no process free for it, or the server could not be started) is retryable even
for a side-effecting tool: the tool-runner withdraws its claim of it.

A server may be kept to some tenants (`tenants`), and may run one process per tenant (`per_tenant`), started on
that tenant's first call with the tenant's name in its arguments and environment, so a server that keeps state
keeps each tenant's apart (docs/tools.md, "MCP servers per tenant"). The declarations are read and checked in
mcp_servers.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import time
from typing import Any

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT, CallToolResult, PaginatedRequestParams, TextContent
from mcp.types import Tool as McpTool

from agent_engine.contracts.mcp import TOOL_NAME, McpRef, McpToolEntry, side_effects_from
from agent_engine.tool_runner.mcp_servers import LISTING_TENANT, ServerSpec, scope_of
from agent_engine.tool_runner.tools.base import Context, Tool, ToolError

log = logging.getLogger("tool-runner")
PING_S = 5.0
"""How long a server may take to answer the ping before each call; no answer: it is started again."""
class ServerDied(Exception):
    """The connection to a server broke; the session is dropped and the next call starts the server again."""


class NotReached(ToolError):
    """The call provably never reached the server: no process was free for it, or the server could not be started
    (or its session set up) for it. Always retryable, even for a side-effecting tool: nothing ran, so the
    tool-runner withdraws its claim in the call log and the next attempt is a fresh call."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class Server:
    """One MCP server's session, held open by a task of its own (the `mcp` package's context managers must be
    entered and left in one task)."""

    def __init__(self, name: str, spec: ServerSpec) -> None:
        self.name = name
        self.spec = spec
        self.session: ClientSession | None = None
        self.starts = 0
        self._holder: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    async def start(self) -> ClientSession:
        """Start the server and open its session (again, when it died)."""
        await self._drop()
        self._stop = asyncio.Event()
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self._holder = asyncio.create_task(self._hold(ready), name=f"mcp:{self.name}")
        try:
            self.session = await asyncio.wait_for(asyncio.shield(ready), self.spec.start_timeout_s)
        except BaseException:
            await self._drop()
            raise
        self.starts += 1
        return self.session

    async def _hold(self, ready: asyncio.Future[ClientSession]) -> None:
        params = StdioServerParameters(command=self.spec.command, args=self.spec.args, env=self.spec.env or None,
                                       cwd=self.spec.cwd)
        try:
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                ready.set_result(session)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ServerDied(repr(exc)))
            elif isinstance(exc, Exception):  # a session that was up broke; the next call starts the server again
                log.warning("MCP server %s: session ended: %s: %s", self.name, type(exc).__name__, exc)
            if not isinstance(exc, Exception):
                raise

    async def _drop(self) -> None:
        self.session = None
        holder, self._holder = self._holder, None
        if holder is not None and not holder.done():
            self._stop.set()
            try:
                await asyncio.wait_for(holder, 5.0)
            except (TimeoutError, Exception):  # noqa: BLE001  a broken session may not close cleanly
                holder.cancel()
                with contextlib.suppress(BaseException):
                    await holder

    async def stop(self) -> None:
        await self._drop()

    async def live_session(self) -> ClientSession:
        """The session, started again when the server is gone or does not answer a ping."""
        async with self._lock:
            if self.session is not None:
                try:
                    await asyncio.wait_for(self.session.send_ping(), PING_S)
                    return self.session
                except Exception as exc:  # noqa: BLE001  any failure means the connection is no use
                    log.warning("MCP server %s did not answer a ping (%s); starting it again", self.name,
                                type(exc).__name__)
            return await self.start()

    async def list_tools(self) -> list[McpTool]:
        session = await self.live_session()
        tools: list[McpTool] = []
        cursor: str | None = None
        while True:
            page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call(self, tool: str, args: dict[str, Any], timeout_s: float) -> CallToolResult:
        try:
            session = await self.live_session()
        except Exception as exc:  # noqa: BLE001  not started, or no session: the call was never sent
            raise NotReached(f"MCP server '{self.name}' could not be started ({type(exc).__name__}: {exc}); the "
                             "call never reached it") from None
        try:
            return await session.call_tool(tool, args, read_timeout_seconds=timeout_s)
        except MCPError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                await self._forget(session)
                raise ServerDied(str(exc)) from None
            if exc.error.code == REQUEST_TIMEOUT:
                raise TimeoutError(str(exc)) from None
            raise
        except (OSError, EOFError) as exc:
            await self._forget(session)
            raise ServerDied(f"{type(exc).__name__}: {exc}") from None

    async def _forget(self, session: ClientSession) -> None:
        async with self._lock:
            if self.session is session:
                await self._drop()


class Shared:
    """A server every allowed tenant's calls share: one process."""

    def __init__(self, name: str, spec: ServerSpec) -> None:
        self.name = name
        self.spec = spec
        self.server = Server(name, spec)

    @property
    def starts(self) -> int:
        return self.server.starts

    async def list_tools(self) -> list[McpTool]:
        return await self.server.list_tools()

    async def call(self, tenant: str | None, tool: str, args: dict[str, Any], timeout_s: float) -> CallToolResult:
        if not self.spec.allows(tenant):
            raise refusal(self.name, tenant)
        return await self.server.call(tool, args, timeout_s)

    async def stop_idle(self) -> None:
        """A shared server is never idle-stopped: it was started with the tool-runner."""

    async def stop(self) -> None:
        await self.server.stop()


class PerTenant:
    """A server with one process per tenant (`per_tenant: true`), each started on its tenant's first call: a
    tenant's call only ever reaches its own process. At most `max_processes` at once; one idle for
    `idle_stop_s` is stopped."""

    def __init__(self, name: str, spec: ServerSpec) -> None:
        self.name = name
        self.spec = spec
        self.processes: dict[str, Server] = {}
        self.running: dict[str, int] = {}
        """Calls in progress per tenant: a process running one is never stopped to make room."""
        self.last_used: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def list_tools(self) -> list[McpTool]:
        """From a process of no tenant's, stopped once it has answered."""
        lister = Server(f"{self.name}[{LISTING_TENANT}]", self.spec.for_tenant(LISTING_TENANT))
        try:
            return await lister.list_tools()
        finally:
            await lister.stop()

    async def call(self, tenant: str | None, tool: str, args: dict[str, Any], timeout_s: float) -> CallToolResult:
        if tenant is None or not self.spec.allows(tenant):
            raise refusal(self.name, tenant)
        server = await self._take(tenant)
        try:
            return await server.call(tool, args, timeout_s)
        finally:
            if self.processes.get(tenant) is server:  # else stopped meanwhile (the tool-runner stopping)
                self.running[tenant] -= 1
                self.last_used[tenant] = time.monotonic()

    async def _take(self, tenant: str) -> Server:
        async with self._lock:
            server = self.processes.get(tenant)
            if server is None:
                if len(self.processes) >= self.spec.max_processes:
                    idle = [t for t in self.processes if not self.running.get(t)]
                    if not idle:
                        raise NotReached(f"MCP server '{self.name}' already runs {len(self.processes)} processes "
                                         f"(max_processes), each in a call; tenant '{tenant}' must wait (the call "
                                         "was not made)")
                    await self._stop(min(idle, key=lambda t: self.last_used.get(t, 0.0)))
                server = self.processes[tenant] = Server(f"{self.name}[{tenant}]", self.spec.for_tenant(tenant))
            self.running[tenant] = self.running.get(tenant, 0) + 1
            self.last_used[tenant] = time.monotonic()
            return server

    async def _stop(self, tenant: str) -> None:
        server = self.processes.pop(tenant)
        self.running.pop(tenant, None)
        self.last_used.pop(tenant, None)
        log.info("MCP server %s: stopping tenant %s's process", self.name, tenant)
        await server.stop()

    async def stop_idle(self) -> None:
        now = time.monotonic()
        async with self._lock:
            for tenant in [t for t in self.processes if not self.running.get(t)
                           and now - self.last_used.get(t, now) >= self.spec.idle_stop_s]:
                await self._stop(tenant)

    async def stop(self) -> None:
        async with self._lock:
            for tenant in list(self.processes):
                await self._stop(tenant)


def refusal(name: str, tenant: str | None) -> ToolError:
    """A call of a tenant the server is not declared for (the router rejects such a task before it starts), or
    one naming no tenant to a server that serves some only; never retryable."""
    return ToolError(f"MCP server '{name}' is not available to tenant '{tenant}'" if tenant is not None else
                     f"MCP server '{name}' serves only calls made for a tenant, and this one names none")


Pool = Shared | PerTenant


def pool(name: str, spec: ServerSpec) -> Pool:
    return PerTenant(name, spec) if spec.per_tenant else Shared(name, spec)


def entry_for(server: str, tool: McpTool, tenants: list[str] | None = None) -> McpToolEntry:
    annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None
    return McpToolEntry(server=server, tool=tool.name, description=tool.description or "",
                        input_schema=tool.input_schema, output_schema=tool.output_schema,
                        annotations=annotations or None, tenants=tenants)


def output_of(name: str, result: CallToolResult, has_schema: bool) -> dict[str, Any]:
    """A call's result as the node's output: its structured content (an object; anything else as `result`),
    else its text. `isError` is the tool's refusal, which goes back to the model."""
    texts = [block.text for block in result.content if isinstance(block, TextContent)]
    if result.is_error:
        raise ToolError(f"tool '{name}' reported an error: " + ("\n".join(texts) or "(no message)"))
    if result.structured_content is not None:
        value = result.structured_content
        return value if isinstance(value, dict) else {"result": value}
    if has_schema:
        raise ToolError(f"tool '{name}' has an output schema but returned no structured content")
    output: dict[str, Any] = {"text": "\n".join(texts)}
    other = [block.type for block in result.content if not isinstance(block, TextContent)]
    if other:
        output["omitted"] = other  # images, audio, resources: not carried in a node's JSON output
    return output


def as_tool(server: Pool, entry: McpToolEntry, loop: asyncio.AbstractEventLoop) -> Tool:
    """The MCP tool as the runner's registry holds it, under `mcp:<server>/<tool>`; each call goes to the server
    for the call's tenant."""
    ref = McpRef(server=entry.server, tool=entry.tool)
    schema = entry.output_schema
    result_schema = None if schema is None else (
        schema if schema.get("type") == "object" else {"type": "object", "properties": {"result": schema}})

    def run(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
        limit = max(ctx.remaining_s(), 0.001)
        tenant = ctx.scope.tenant if ctx.scope is not None else None
        future = asyncio.run_coroutine_threadsafe(server.call(tenant, entry.tool, args, limit), loop)
        try:
            # a little longer than the call's own limit, which the session enforces and reports
            result = future.result(limit + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"MCP tool {ref.runs_as} ran over {limit:g}s") from None
        except ServerDied as exc:
            raise ToolError(f"MCP server '{entry.server}' died during the call ({exc}); it is started again for "
                            "the next call", retryable=True) from None
        except MCPError as exc:  # the server refused the call itself (unknown tool, invalid params)
            raise ToolError(f"MCP server '{entry.server}' refused the call to '{entry.tool}': {exc}") from None
        except RuntimeError as exc:  # the client found the structured content breaking the output schema
            raise ToolError(f"tool '{ref.runs_as}' returned a result that does not match its output schema: "
                            f"{exc}") from None
        return output_of(ref.runs_as, result, schema is not None)

    return Tool(ref.runs_as, entry.description, entry.input_schema, run,
                idempotent=not bool(entry.side_effects), result_schema=result_schema)


class McpTools:
    """Every declared server, started at once (a per-tenant one: to list its tools); their tools and catalogue
    entries."""

    def __init__(self, specs: dict[str, ServerSpec]) -> None:
        self.servers = {name: pool(name, spec) for name, spec in specs.items()}
        self.entries: list[McpToolEntry] = []
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, Tool]:
        """Start each server and list its tools; a server that fails to start stops the tool-runner, naming it."""
        loop = asyncio.get_running_loop()
        tools: dict[str, Tool] = {}
        for name, server in self.servers.items():
            try:
                listed = await server.list_tools()
            except Exception as exc:  # noqa: BLE001  named, then the tool-runner stops
                await self.stop()
                raise ValueError(f"AE_MCP_SERVERS: server '{name}' ({server.spec.command}) did not start or list "
                                 f"its tools: {type(exc).__name__}: {exc}") from None
            for tool in listed:
                if not re.fullmatch(TOOL_NAME, tool.name):
                    log.warning("MCP server %s: tool %r skipped: its name does not match %s", name, tool.name,
                                TOOL_NAME)
                    continue
                entry = entry_for(name, tool, server.spec.tenants)
                self.entries.append(entry)
                tools[McpRef(server=name, tool=tool.name).runs_as] = as_tool(server, entry, loop)
            log.info("MCP server %s (%s): %s", name, scope_of(server.spec),
                     ", ".join(describe(e) for e in self.entries if e.server == name))
        idle = [s.spec.idle_stop_s for s in self.servers.values() if s.spec.per_tenant]
        if idle:
            self._reaper = asyncio.create_task(self._stop_idle(min(min(idle) / 2, 60.0)), name="mcp:idle")
        return tools

    async def _stop_idle(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            for server in self.servers.values():
                try:
                    await server.stop_idle()
                except Exception:  # a process that does not stop cleanly must not end the sweeping
                    log.exception("MCP server %s: stopping idle processes failed", server.name)

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for server in self.servers.values():
            await server.stop()


def describe(entry: McpToolEntry) -> str:
    """How the tool-runner will treat a tool's side effects, and why (for the log)."""
    said = side_effects_from(entry.annotations)
    why = "no annotations: tools.yaml decides" if said is None else "side effects" if said else "idempotent"
    return f"{entry.tool} ({why})"
