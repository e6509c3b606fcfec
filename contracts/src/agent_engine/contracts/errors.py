"""How a validation error is told to whoever sent the value: where and what, never the value itself (it may
be huge, or another system's secret)."""

from __future__ import annotations

from pydantic import ValidationError


def validation_summary(exc: ValidationError, limit: int = 3, *, count_rest: bool = False) -> str:
    """The first `limit` problems as `field.path: message`, joined by "; " (and how many more, if asked)."""
    parts = [f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()[:limit]]
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if count_rest and more > 0 else "")
