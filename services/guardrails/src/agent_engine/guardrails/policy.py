"""The guardrails policy file: one YAML file (`AE_GUARDRAILS_POLICY`) with defaults and per-tenant sections.

    defaults:                # every tenant
      input: {...}           # injection rules, PII kinds, custom patterns (checks.py)
      rate_limits: {...}     # per tenant, user and session
      tools: {...}           # the tool-call gate
      output: {...}          # output checks
    tenants:
      acme:
        tools: {...}         # merged over the defaults' section, key by key

Each gate reads its own section with `PolicyFile.section(name, tenant)` and validates it with its own model,
so a mistake is reported at start, naming the file, the tenant and the field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from agent_engine.contracts.errors import validation_summary

M = TypeVar("M", bound=BaseModel)
SECTIONS = ("input", "rate_limits", "tools", "output")
TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class PolicyFile:
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    tenants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    path: str = "(no policy file)"

    @classmethod
    def load(cls, path: str | Path) -> PolicyFile:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise PolicyError(f"guardrails policy {path}: cannot read it ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"guardrails policy {path}: not valid YAML ({exc})") from None
        return cls.parse(raw, str(path))

    @classmethod
    def parse(cls, raw: Any, path: str = "(policy)") -> PolicyFile:
        if not isinstance(raw, dict):
            raise PolicyError(f"guardrails policy {path}: the top level must be a mapping with 'defaults' and "
                              "'tenants'")
        unknown = sorted(set(raw) - {"defaults", "tenants"})
        if unknown:
            raise PolicyError(f"guardrails policy {path}: unknown top-level keys {unknown}; "
                              "known: ['defaults', 'tenants']")
        defaults = _sections(raw.get("defaults") or {}, f"{path}: defaults")
        tenants_raw = raw.get("tenants") or {}
        if not isinstance(tenants_raw, dict):
            raise PolicyError(f"guardrails policy {path}: 'tenants' must map tenant names to sections")
        tenants = {}
        for name, sections in tenants_raw.items():
            if not isinstance(name, str) or not TENANT.match(name):
                raise PolicyError(f"guardrails policy {path}: {name!r} is not a tenant name")
            tenants[name] = _sections(sections or {}, f"{path}: tenants.{name}")
        return cls(defaults, tenants, path)

    def section(self, name: str, tenant: str | None = None) -> dict[str, Any]:
        """The defaults' section `name` with the tenant's own keys over it."""
        if name not in SECTIONS:
            raise KeyError(name)
        merged = dict(self.defaults.get(name, {}))
        if tenant is not None:
            merged.update(self.tenants.get(tenant, {}).get(name, {}))
        return merged

    def read(self, name: str, tenant: str | None, model: type[M], limit: int = 5) -> M:
        """The section validated by the gate's own model; a mistake is a PolicyError naming where it is."""
        try:
            return model.model_validate(self.section(name, tenant))
        except ValidationError as exc:
            raise PolicyError(f"guardrails policy {self.where(name, tenant)}: "
                              + validation_summary(exc, limit)) from None

    def where(self, name: str, tenant: str | None = None) -> str:
        """Where a section comes from, for error messages: `policy.yaml: tenants.acme.tools`."""
        if tenant is not None and name in self.tenants.get(tenant, {}):
            return f"{self.path}: tenants.{tenant}.{name}"
        return f"{self.path}: defaults.{name}"


def _sections(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise PolicyError(f"guardrails policy {where} must be a mapping of sections {list(SECTIONS)}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise PolicyError(f"guardrails policy {where}: unknown sections {unknown}; known: {list(SECTIONS)}")
    for name, body in raw.items():
        if not isinstance(body, dict):
            raise PolicyError(f"guardrails policy {where}.{name} must be a mapping")
    return {name: dict(body) for name, body in raw.items()}


def policy_file_from_env() -> PolicyFile:
    """`AE_GUARDRAILS_POLICY` read at start; no file means an empty policy (every gate's defaults)."""
    path = os.environ.get("AE_GUARDRAILS_POLICY", "").strip()
    return PolicyFile.load(path) if path else PolicyFile()
