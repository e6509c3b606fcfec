"""A small MCP server over stdio, built with the `mcp` package's server API, for the tool-runner's MCP tests
and the e2e test: `python -m agent_engine.testkit.mcp_notes <notes file>`.

Its tools cover what the tool-runner must handle: structured output with an output schema and side effects
(`add_note`), a read-only tool (`list_notes`), plain text without annotations (`shout`), a tool error
(`fail`), a server that dies mid-call (`crash`) and a slow call (`slow`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from typing_extensions import TypedDict  # pydantic reads only this one on Python < 3.12


class Added(TypedDict):
    id: int
    count: int


class Note(TypedDict):
    title: str
    text: str


class Notes(TypedDict):
    notes: list[Note]


class Process(TypedDict):
    names: list[str]
    pid: int


def build(path: Path) -> MCPServer:
    server = MCPServer("notes")

    def read() -> list[Note]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @server.tool(description="Adds a note (a title and a text) to the notebook; returns its id and the count.",
                 annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False))
    def add_note(title: str, text: str) -> Added:
        with path.open("a") as notes:  # each call appends a line: running it twice shows
            notes.write(json.dumps({"title": title, "text": text}) + "\n")
        count = len(read())
        return {"id": count, "count": count}

    @server.tool(description="Lists the notes of the notebook.", annotations=ToolAnnotations(read_only_hint=True))
    def list_notes() -> Notes:
        return {"notes": read()}

    @server.tool(description="Returns the text in capitals.", structured_output=False)
    def shout(text: str) -> str:
        return text.upper()

    @server.tool(description="Always fails with the reason given.", annotations=ToolAnnotations(read_only_hint=True))
    def fail(reason: str) -> str:
        raise ToolError(reason)

    @server.tool(description="Ends the server process at once.", annotations=ToolAnnotations(read_only_hint=True))
    def crash() -> str:
        os._exit(3)

    @server.tool(description="Sleeps, then answers.", annotations=ToolAnnotations(read_only_hint=True))
    def slow(seconds: float) -> str:
        time.sleep(seconds)
        return "slept"

    @server.tool(description="The server's process id and the names of its environment variables.",
                 annotations=ToolAnnotations(read_only_hint=True))
    def environment() -> Process:
        return {"names": sorted(os.environ), "pid": os.getpid()}

    return server


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m agent_engine.testkit.mcp_notes <notes file>")
    build(Path(sys.argv[1])).run("stdio")


if __name__ == "__main__":
    main()
