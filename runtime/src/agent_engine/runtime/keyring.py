"""A directory of credentials, and the server configuration made from it.

    <root>/services/<service>.json      each service's own credential
    <root>/platform/admin.json          the platform administrator's (agentctl's default)
    <root>/tenants/<tenant>/<user>.json the tenant credentials issued here (handed to other systems)
    <root>/registry.json                the public half of every tenant credential: what the server allows
    <root>/tenants.json                 tenants declared without a credential (`agentctl tenant declare`)
    <root>/servers.json                 the nats-servers using this directory: config file and pid

Issuing or revoking a tenant credential rewrites each server's `auth.conf` and tells the server to reload
it (SIGHUP): a revoked key's connections are closed at once, a new key works at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_engine.contracts.credentials import Credential, Role, load_credential
from agent_engine.contracts.envelope import TENANT_PATTERN
from agent_engine.contracts.events import EVENT_TYPES
from agent_engine.runtime.auth import Authorization, new_seed, public_key, rights_for, rights_of
from agent_engine.runtime.processes import pid_alive

SERVICES = ("guardrails", "router", "agent-runner", "tool-runner", "telemetry", "authority", "dashboard")
"""Each has its own credential; the authority is the stack's credential service (cli/authority.py)."""
CREDENTIAL_ENV = "AE_NATS_CREDENTIAL"
"""The credential file a process connects with (each service gets its own from the stack)."""
KEYRING_ENV = "AE_CREDENTIALS_DIR"
ALWAYS_SERVED = "default"
"""The tenant agentctl acts for when none is named (cli/client.py DEFAULT_TENANT): served without a declaration,
so `agentctl submit` and `run` store large outputs on a fresh keyring."""


class KeyringError(Exception):
    """A credential that cannot be issued or revoked, named with the reason."""


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


@dataclass(frozen=True)
class Keyring:
    root: Path

    def service(self, name: str) -> Path:
        return self.root / "services" / f"{name}.json"

    @property
    def admin(self) -> Path:
        return self.root / "platform" / "admin.json"

    def tenant_credential(self, tenant: str, user: str) -> Path:
        return self.root / "tenants" / tenant / f"{user}.json"

    def ensure_platform(self) -> Keyring:
        """Credentials for the services and the platform administrator, made once."""
        self.ensure_platform_created()
        return self

    def ensure_platform_created(self) -> bool:
        """As ensure_platform; True when a credential was missing (and is now made)."""
        made = False
        for name in SERVICES:
            if not self.service(name).exists():
                self._issue(self.service(name), Credential(kind="service", user=name, seed=new_seed()))
                made = True
        if not self.admin.exists():
            self._issue(self.admin, Credential(kind="platform", user="admin", seed=new_seed()))
            made = True
        return made

    def _issue(self, path: Path, credential: Credential) -> None:
        write_secret(path, credential.model_dump_json(exclude_none=True) + "\n")

    # tenant credentials -------------------------------------------------------------------------------

    def registry(self) -> list[dict[str, Any]]:
        path = self.root / "registry.json"
        return list(json.loads(path.read_text())["tenants"]) if path.exists() else []

    def _save_registry(self, entries: list[dict[str, Any]]) -> None:
        write_secret(self.root / "registry.json", json.dumps({"tenants": entries}, indent=1) + "\n")

    def issue(self, tenant: str, user: str, role: Role) -> Path:
        """A new tenant credential: its file (with the seed) under tenants/, its public key in the registry,
        and every server told. Refuses a name already issued (revoke it first)."""
        credential = Credential(kind="tenant", tenant=tenant, user=user, role=role, seed=new_seed())
        path = self.tenant_credential(tenant, user)
        self.register(tenant, user, role, public_key(credential.seed),
                      before_apply=lambda: self._issue(path, credential))
        return path

    def register(self, tenant: str, user: str, role: Role, key: str,
                 before_apply: Callable[[], None] | None = None) -> dict[str, Any]:
        """Allow a public key someone else holds the seed of (a tenant admin's request); the server is told."""
        with self._locked():
            return self._register(tenant, user, role, key, before_apply)

    def _register(self, tenant: str, user: str, role: Role, key: str,
                  before_apply: Callable[[], None] | None) -> dict[str, Any]:
        entries = self.registry()
        if any(e["tenant"] == tenant and e["user"] == user for e in entries):
            raise KeyringError(f"tenant '{tenant}' already has a credential named '{user}' (revoke it first)")
        if any(e["public_key"] == key for e in entries) or key in self._platform_keys():
            raise KeyringError("that public key is already registered; make a new key pair")
        entry = {"tenant": tenant, "user": user, "role": role, "public_key": key,
                 "issued": datetime.now(UTC).isoformat(timespec="seconds")}
        if before_apply is not None:
            before_apply()
        self._save_registry([*entries, entry])
        self.apply()
        return entry

    def _platform_keys(self) -> set[str]:
        paths = [self.service(n) for n in SERVICES] + [self.admin]
        return {public_key(load_credential(p).seed) for p in paths if p.exists()}

    def revoke(self, tenant: str, user: str | None = None) -> list[dict[str, Any]]:
        """Revoke one credential of a tenant, or all of them; returns what was revoked."""
        with self._locked():
            return self._revoke(tenant, user)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One change of the registry at a time, across processes (agentctl and the authority)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _revoke(self, tenant: str, user: str | None) -> list[dict[str, Any]]:
        entries = self.registry()
        gone = [e for e in entries if e["tenant"] == tenant and (user is None or e["user"] == user)]
        if not gone:
            who = f"credential '{user}' of tenant '{tenant}'" if user else f"credentials of tenant '{tenant}'"
            raise KeyringError(f"no {who} in {self.root / 'registry.json'}")
        self._save_registry([e for e in entries if e not in gone])
        for entry in gone:
            self.tenant_credential(entry["tenant"], entry["user"]).unlink(missing_ok=True)
        self.apply()
        return gone

    # the tenants served ------------------------------------------------------------------------------

    def _declared(self) -> list[str]:
        path = self.root / "tenants.json"
        return list(json.loads(path.read_text())["tenants"]) if path.exists() else []

    def tenants(self) -> list[str]:
        """The tenants the engine serves: each one with a credential, and each declared without one. Their
        artifact buckets are what the services may read and write (runtime/auth.py names each: NATS cannot
        match a prefix of a stream name, and `*` would be every stream)."""
        return sorted({ALWAYS_SERVED, *self._declared(), *(e["tenant"] for e in self.registry())})

    def declare(self, tenant: str) -> bool:
        """Serve `tenant` (open its artifact bucket to the services) without issuing it a credential: for a
        tenant whose tasks only the platform submits. Every server is told; False when it was served already.
        A declaration stays when the tenant's credentials are revoked (its tasks may still run)."""
        if not re.match(TENANT_PATTERN, tenant):
            raise KeyringError(f"tenant {tenant!r} is not valid: use 1 to 64 letters, digits, '_' or '-'")
        with self._locked():
            declared = self._declared()
            if tenant in declared:
                return False
            write_secret(self.root / "tenants.json", json.dumps({"tenants": sorted([*declared, tenant])}) + "\n")
            self.apply()
            return True

    # the servers --------------------------------------------------------------------------------------

    def authorization(self) -> Authorization:
        auth = Authorization()
        types = list(EVENT_TYPES)
        tenants = self.tenants()
        for path in [self.service(n) for n in SERVICES] + [self.admin]:
            credential = load_credential(path)
            auth.add(public_key(credential.seed), rights_of(credential, types, tenants), credential.identity)
        for e in self.registry():
            auth.add(e["public_key"], rights_for("tenant", e["user"], e["tenant"], e["role"], types),
                     f"{e['tenant']}/{e['user']} ({e['role']})")
        return auth

    def write_conf(self, path: Path) -> None:
        write_secret(path, self.authorization().render())

    def attach(self, conf: Path, pid: int, log: Path) -> None:
        """Record a server using this keyring (its auth.conf, pid and log), so `apply` reaches it."""
        servers = [s for s in self._servers() if s["conf"] != str(conf) and pid_alive(s["pid"])]
        servers.append({"conf": str(conf), "pid": pid, "log": str(log)})
        write_secret(self.root / "servers.json", json.dumps(servers) + "\n")

    def _servers(self) -> list[dict[str, Any]]:
        path = self.root / "servers.json"
        return list(json.loads(path.read_text())) if path.exists() else []

    def servers(self) -> list[dict[str, Any]]:
        """The running nats-servers that use this keyring."""
        return [s for s in self._servers() if pid_alive(s["pid"])]

    def apply(self, timeout: float = 10.0) -> int:
        """Rewrite every attached server's auth.conf and have it reload; returns how many did. Waits for each
        server's log to say it reloaded, so a credential works (or stops working) when this returns."""
        told = 0
        self.write_conf(self.root / "auth.conf")  # for a server this keyring did not start: include it, reload
        for server in self.servers():
            log = Path(server["log"])
            before = _reloads(log)
            self.write_conf(Path(server["conf"]))
            os.kill(server["pid"], signal.SIGHUP)
            deadline = time.monotonic() + timeout
            while _reloads(log) <= before:
                if time.monotonic() > deadline:
                    raise KeyringError(f"nats-server (pid {server['pid']}) did not reload {server['conf']} "
                                       f"within {timeout:.0f}s; see {log}")
                time.sleep(0.02)
            told += 1
        return told


def _reloads(log: Path) -> int:
    try:
        return log.read_text(errors="replace").count("Reloaded server configuration")
    except OSError:
        return 0


def credential_from_env() -> Credential | None:
    """The credential named by AE_NATS_CREDENTIAL, if any (an unreadable one is an error, not a fallback)."""
    path = os.environ.get(CREDENTIAL_ENV)
    return load_credential(path) if path else None
