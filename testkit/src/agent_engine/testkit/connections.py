"""One NATS connection under a credential file, for tests of what the server lets a credential do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
from nats.aio.client import Client

from agent_engine.contracts.credentials import load_credential
from agent_engine.runtime.bus import auth_options


@asynccontextmanager
async def connected(url: str, credential_file: Path | str, errors: list[str] | None = None,
                    ) -> AsyncIterator[Client]:
    """Connected without reconnecting; the server's asynchronous errors (a permissions violation) go to `errors`."""
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc).lower())

    nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False,
                            **auth_options(load_credential(credential_file)))
    try:
        yield nc
    finally:
        await nc.close()
