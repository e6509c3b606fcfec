"""The `input:` section of the policy file: injection rules and threshold, which PII kinds are redacted, a tenant's
own PII patterns. Read and checked once at start, so a mistake stops the service naming the file, tenant and field.

    input:
      injection_threshold: 0.7          # the total score at or over which a request is refused
      injection_rules:                  # extra rules (a default's id replaces that default)
        - {id: injection.wire-money, pattern: "wire .{0,20} to account", score: 0.8}
      disable: [injection.you-are-now]  # default rules this tenant does without
      redact: [email, phone, card, iban, ssn]
      custom_pii:
        - {id: employee-id, pattern: "EMP-\\d{6}"}
      classifier:                       # a model also judges what the rules let through (classifier.py)
        {provider: anthropic, model: claude-haiku-4-5, threshold: 0.8, on_error: refuse, timeout_s: 20}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_engine.contracts.manifest import Provider
from agent_engine.contracts.policy import compiles
from agent_engine.guardrails import injection, pii
from agent_engine.guardrails.policy import PolicyFile

DEFAULT_THRESHOLD = 0.7
KIND_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class InjectionRuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=injection.RULE_ID.pattern)
    pattern: str = Field(min_length=1, max_length=2000)
    """Matched against the normalised text (NFKC, case-folded, zero-width characters removed, whitespace
    collapsed): write it in lower case."""
    score: float = Field(gt=0, le=10)

    _check = field_validator("pattern")(compiles)


class CustomPiiSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=KIND_ID.pattern)
    pattern: str = Field(min_length=1, max_length=2000)

    _check = field_validator("pattern")(compiles)

    @field_validator("id")
    @classmethod
    def _not_builtin(cls, value: str) -> str:
        if value in pii.KINDS:
            raise ValueError(f"'{value}' is a built-in kind; name a custom pattern otherwise")
        return value


class ClassifierSpec(BaseModel):
    """`input.classifier` of the policy file."""

    model_config = ConfigDict(extra="forbid")
    provider: Provider
    model: str = Field(min_length=1, max_length=128)
    prompt: str = Field(default="", max_length=4000)
    """Added to the classifier's fixed instruction."""
    threshold: float = Field(default=0.8, gt=0, le=1)
    on_error: Literal["allow", "refuse"] = "refuse"
    """What a request gets when the classifier does not answer in time, fails, or answers nonsense: refused
    (the safe side, the default) or let through on the rule set's word alone."""
    timeout_s: float = Field(default=20.0, gt=0, le=120)
    max_tokens: int = Field(default=256, ge=16, le=4096)
    mock_responses: list[dict[str, Any]] = Field(default_factory=list, max_length=16)
    """For `provider: mock` (tests, demos): the scripted reply, e.g. [{score: 0.95, label: injection, reason: x}]."""


class InputSection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    injection_threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0)
    injection_rules: list[InjectionRuleSpec] = Field(default_factory=list)
    disable: list[str] = Field(default_factory=list)
    redact: list[str] | None = None
    """None: AE_GUARDRAILS_REDACT (default email, phone, card, iban)."""
    custom_pii: list[CustomPiiSpec] = Field(default_factory=list)
    classifier: ClassifierSpec | None = None
    """A model asked about every request the rule set lets through (classifier.py); None: the rules alone."""

    @field_validator("disable")
    @classmethod
    def _known_rules(cls, value: list[str]) -> list[str]:
        known = {r.id for r in injection.DEFAULT_RULES}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown rules {unknown}; the default rules are {sorted(known)}")
        return value

    @field_validator("redact")
    @classmethod
    def _known_kinds(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(pii.KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; known: {sorted(pii.KINDS)} (custom_pii patterns are "
                             "always redacted)")
        return value


@dataclass(frozen=True)
class InputRules:
    """One tenant's input checks, compiled."""

    injection: tuple[injection.Rule, ...] = injection.DEFAULT_RULES
    threshold: float = DEFAULT_THRESHOLD
    redact: tuple[pii.Detector, ...] | None = None
    """None: the kinds of `Policy.redact` (AE_GUARDRAILS_REDACT)."""
    classifier: ClassifierSpec | None = None


def compile_section(section: InputSection, default_redact: tuple[str, ...]) -> InputRules:
    own = [injection.Rule(r.id, re.compile(r.pattern), r.score) for r in section.injection_rules]
    custom = [pii.custom(c.id, c.pattern) for c in section.custom_pii]
    redact = None  # the service's default kinds (AE_GUARDRAILS_REDACT)
    if section.redact is not None or custom:
        redact = pii.detectors(section.redact if section.redact is not None else default_redact, custom)
    return InputRules(injection.rules_for(own, section.disable), section.injection_threshold, redact,
                      section.classifier)


def read_section(policy: PolicyFile, tenant: str | None) -> InputSection:
    return policy.read("input", tenant, InputSection)


def input_rules(policy: PolicyFile, default_redact: tuple[str, ...]) -> tuple[InputRules, dict[str, InputRules]]:
    """The defaults' rules and each tenant's (for tenants with a policy of their own)."""
    defaults = compile_section(read_section(policy, None), default_redact)
    tenants = {name: compile_section(read_section(policy, name), default_redact) for name in policy.tenants}
    return defaults, tenants
