"""Secret settings (provider keys, the PostgreSQL URL with its password), from the environment or from a file
named by `<NAME>_FILE` (a mounted Kubernetes Secret, a compose secret); nowhere else.

The value is never logged, put in an event, or shown by `agentctl providers`: only where it came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


class CredentialError(Exception):
    """A secret setting that cannot be used; the message names the variable, never the value."""


@dataclass(frozen=True)
class Secret:
    value: str = field(repr=False)
    source: str = ""
    """The variable it came from (`ANTHROPIC_API_KEY`, or `ANTHROPIC_API_KEY_FILE` for a file)."""

    def __bool__(self) -> bool:
        return bool(self.value)


def secret(name: str) -> Secret:
    """`$NAME`, or the contents of the file `$NAME_FILE` (surrounding whitespace stripped); empty when neither."""
    direct = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE", "")
    if direct and path:
        raise CredentialError(f"both {name} and {name}_FILE are set; set one of them")
    if direct:
        return Secret(direct.strip(), name)
    if not path:
        return Secret("")
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise CredentialError(f"{name}_FILE={path}: cannot read the file ({exc.strerror})") from None
    if not value:
        raise CredentialError(f"{name}_FILE={path}: the file is empty")
    return Secret(value, f"{name}_FILE")
