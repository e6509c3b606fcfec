"""The tool-runner's limits and grants, read from the environment once at start-up."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from agent_engine.memory import MemoryStore
from agent_engine.runtime.settings import env_float, env_int

HOST_ENTRY = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])"
                        r"(:[0-9]{1,5})?$")
NetworkIsolation = Literal["auto", "require", "off"]


@dataclass(frozen=True)
class AllowedHost:
    """One AE_HTTP_ALLOW entry: `host` (default ports 80/443 only), `host:port`, or `*.domain` (subdomains)."""

    host: str
    port: int | None = None

    def matches(self, host: str, port: int, default_port: int) -> bool:
        if self.host.startswith("*."):
            host_ok = host.endswith(self.host[1:])
        else:
            host_ok = host == self.host
        return host_ok and port == (self.port if self.port is not None else default_port)

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def parse_allowlist(raw: str, variable: str = "AE_HTTP_ALLOW") -> tuple[AllowedHost, ...]:
    """`"a.example,b.example:8080,*.example.org"` -> entries; a malformed entry is named in the error."""
    entries = []
    for item in (part.strip().lower() for part in raw.split(",")):
        if not item:
            continue
        if not HOST_ENTRY.match(item):
            raise ValueError(f"{variable}: '{item}' is not a host, host:port or *.domain entry "
                             "(no scheme, path or spaces; IPv6 in brackets, e.g. [::1]:8080)")
        host, port = item, None
        if not item.endswith("]") and ":" in item.rsplit("]", 1)[-1]:
            host, _, port_text = item.rpartition(":")
            port = int(port_text)
            if not 0 < port < 65536:
                raise ValueError(f"{variable}: '{item}' has port {port}, outside 1-65535")
        entries.append(AllowedHost(host.strip("[]") if host.startswith("[") else host, port))
    return tuple(entries)


def _isolation(raw: str) -> NetworkIsolation:
    if raw in ("auto", "require", "off"):
        return cast(NetworkIsolation, raw)
    raise ValueError(f"AE_PYTHON_NETNS={raw!r}: expected auto, require or off")


@dataclass(frozen=True)
class ToolConfig:
    workspace: Path = field(default_factory=lambda: Path(".").resolve())
    timeout_s: float = 30.0
    """Hard limit on one tool run; a dispatch's deadline can only shorten it."""
    http_allow: tuple[AllowedHost, ...] = ()
    http_max_bytes: int = 131072
    python_timeout_s: float = 10.0
    python_memory_mb: int = 256
    python_output_bytes: int = 65536
    python_netns: NetworkIsolation = "auto"
    memory: MemoryStore | None = field(default=None, compare=False, repr=False)
    """The memory tools' store, opened by the composition root when AE_POSTGRES_URL is set; None: they refuse."""

    @classmethod
    def from_env(cls) -> ToolConfig:
        """Raises ValueError naming the variable when one is malformed."""
        config = cls(
            workspace=Path(os.environ.get("AE_TOOL_WORKSPACE", ".")).resolve(),
            timeout_s=env_float("AE_TOOL_TIMEOUT_S", 30.0),
            http_allow=parse_allowlist(os.environ.get("AE_HTTP_ALLOW", "")),
            http_max_bytes=env_int("AE_HTTP_MAX_BYTES", 131072),
            python_timeout_s=env_float("AE_PYTHON_TIMEOUT_S", 10.0),
            python_memory_mb=env_int("AE_PYTHON_MEMORY_MB", 256),
            python_output_bytes=env_int("AE_PYTHON_MAX_OUTPUT", 65536),
            python_netns=_isolation(os.environ.get("AE_PYTHON_NETNS", "auto")),
        )
        for name, value in (("AE_TOOL_TIMEOUT_S", config.timeout_s), ("AE_HTTP_MAX_BYTES", config.http_max_bytes),
                            ("AE_PYTHON_TIMEOUT_S", config.python_timeout_s),
                            ("AE_PYTHON_MEMORY_MB", config.python_memory_mb),
                            ("AE_PYTHON_MAX_OUTPUT", config.python_output_bytes)):
            if value <= 0:
                raise ValueError(f"{name}={value:g} must be greater than 0")
        return config
