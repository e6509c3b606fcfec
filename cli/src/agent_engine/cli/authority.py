"""The credential authority: lets a tenant's admin issue, list and revoke its own tenant's credentials
over the bus, without the platform's keyring ever leaving the platform.

It answers `aerpc.tenant.<tenant>.auth.<action>`, which only an admin credential of that tenant may
publish (NATS permissions), and acts for the tenant in the subject only. The requester makes its key
pair itself and sends the public key: no seed ever crosses the bus. The authority runs next to the
nats-server whose configuration it rewrites (in the local stack, as one of its processes).

    credential.add     {"user": "billing", "role": "submitter", "public_key": "U..."}
    credential.list    {}
    credential.revoke  {"user": "billing"}
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from agent_engine.contracts.credentials import ROLES
from agent_engine.contracts.subjects import AUTH_RPC, IDENTITY_PATTERN, rpc_scope, rpc_subject
from agent_engine.runtime import health, service
from agent_engine.runtime.bus import connect, connection_check
from agent_engine.runtime.keyring import KEYRING_ENV, Keyring, KeyringError
from agent_engine.runtime.queries import answer_query, read_query
from agent_engine.runtime.settings import Settings

log = logging.getLogger("authority")
PUBLIC_USER_KEY = re.compile(r"^U[A-Z2-7]{55}$")


def answer(keyring: Keyring, tenant: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request of `tenant`'s admin (blocking: the keyring waits for the server to reload)."""
    user = body.get("user")
    if action == "credential.list":
        return {"tenant": tenant, "credentials": [e for e in keyring.registry() if e["tenant"] == tenant]}
    if not isinstance(user, str) or not re.match(IDENTITY_PATTERN, user):
        return {"error": "'user' must be 1 to 64 letters, digits, '_' or '-'"}
    try:
        if action == "credential.add":
            role, key = body.get("role"), body.get("public_key")
            if role not in ROLES:
                return {"error": f"'role' must be one of {', '.join(ROLES)}"}
            if not isinstance(key, str) or not PUBLIC_USER_KEY.match(key):
                return {"error": "'public_key' must be a user nkey's public key (56 characters starting with U)"}
            entry = keyring.register(tenant, user, role, key)
            log.info("registered %s credential %s/%s", role, tenant, user)
            return {"registered": entry}
        if action == "credential.revoke":
            gone = keyring.revoke(tenant, user)
            log.info("revoked credential %s/%s", tenant, user)
            return {"revoked": gone}
    except KeyringError as exc:
        return {"error": str(exc)}
    return {"error": f"unknown authority request '{action}'; known: credential.add, credential.list, "
                     "credential.revoke"}


async def main(stop: asyncio.Event) -> None:
    keyring = Keyring(Path(os.environ[KEYRING_ENV]))
    nc = await connect(Settings().nats_url, "authority")
    lock = asyncio.Lock()

    async def on_request(msg: Msg) -> None:
        tenant, action = rpc_scope(AUTH_RPC, msg.subject)
        query, problem = read_query(msg.data, task_required=False)
        if tenant is None:
            reply = {"error": "the authority answers tenant-scoped requests only"}
        elif problem:
            reply = {"error": problem}
        else:
            async with lock:  # one change of the keyring at a time
                reply = await asyncio.to_thread(answer, keyring, tenant, action, query)
        await answer_query(msg, reply, nc.max_payload, tenant)

    await nc.subscribe(rpc_subject(AUTH_RPC, ">", "*"), cb=on_request)
    health.PROCESS.add("nats", connection_check(nc))
    try:
        await stop.wait()
    finally:
        await nc.close()


if __name__ == "__main__":
    if not os.environ.get(KEYRING_ENV):
        raise SystemExit(f"the authority needs {KEYRING_ENV}: the keyring of the nats-server it manages")
    service.run("authority", main)
