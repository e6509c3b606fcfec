"""A credential file: who a NATS connection is, and the nkey seed that proves it.

Every connection to the bus authenticates with an nkey (an Ed25519 key pair): the server knows only the
public key and the permissions that go with it; the holder keeps the seed in a file like this one,
readable by its owner only. The file also says which tenant and role the key was issued for and the inbox
prefix its permissions allow, so a client needs nothing else to connect.

    {"kind": "tenant", "tenant": "acme", "user": "billing", "role": "submitter", "seed": "SUA..."}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_engine.contracts.envelope import TENANT_PATTERN
from agent_engine.contracts.subjects import IDENTITY_PATTERN, service_inbox, tenant_inbox

Role = Literal["viewer", "submitter", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "submitter", "operator", "admin")
"""A tenant credential's role; each may do what the one before it may, and more:
viewer (read its tenant's events, ask about its tasks), submitter (+ submit tasks), operator (+ approve,
reject, cancel, fork), admin (+ issue and revoke its tenant's credentials)."""


class Credential(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["service", "platform", "tenant"]
    """A service's own credential, the platform administrator's (every tenant), or a tenant's."""
    user: str = Field(pattern=IDENTITY_PATTERN)
    """The name: a service's name, or a user within a tenant (what approvals and requests record)."""
    tenant: str | None = Field(default=None, pattern=TENANT_PATTERN)
    role: Role | None = None
    seed: str = Field(min_length=58, max_length=58, pattern=r"^SU[A-Z2-7]+$", repr=False)
    """The nkey seed of a user key (starts "SU"). Secret: never logged, never in an event."""

    @property
    def inbox(self) -> str:
        """The inbox prefix this credential may receive replies on."""
        if self.kind == "tenant" and self.tenant:
            return tenant_inbox(self.tenant, self.user)
        return service_inbox(self.user)

    @property
    def identity(self) -> str:
        return f"{self.tenant}/{self.user}" if self.kind == "tenant" else f"{self.kind}/{self.user}"


class CredentialError(ValueError):
    """A credential file that cannot be used, named with what is wrong (never with the seed)."""


def load_credential(path: str | Path) -> Credential:
    path = Path(path).expanduser()
    try:
        raw = path.read_text()
    except OSError as exc:
        raise CredentialError(f"cannot read credential file {path}: {exc.strerror or exc}") from None
    try:
        return Credential.model_validate_json(raw)
    except ValidationError as exc:
        wrong = ", ".join(".".join(str(p) for p in e["loc"]) or "file" for e in exc.errors()[:3])
        raise CredentialError(f"credential file {path} is not an Agent Engine credential (check: {wrong})") from None
