"""`json.dumps(value, indent=1)`, the text a prompt shows its JSON in, made faster.

With an indent the standard library encodes in Python (`_make_iterencode`, whose setup alone was the larger part
of building a small prompt); this writes the same text with plain recursion, the C string encoder for strings, and
the standard library's own rules for numbers and keys. Anything else (a value that is not JSON's: a set, a
datetime, a reference cycle) goes to `json.dumps` itself, which gives the same text or raises the same error.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

INFINITY = float("inf")


class _NotPlain(Exception):
    """A value this encoder leaves to `json.dumps`."""


def indented(value: Any) -> str:
    """Exactly `json.dumps(value, indent=1)`."""
    try:
        return _encode(value, "\n")
    except (_NotPlain, RecursionError):
        return json.dumps(value, indent=1)


def _encode(value: Any, newline: str) -> str:
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    inner = newline + " "
    if isinstance(value, dict):
        if not value:
            return "{}"
        return ("{" + inner + ("," + inner).join(_key(k) + ": " + _encode(v, inner) for k, v in value.items())
                + newline + "}")
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        return "[" + inner + ("," + inner).join(_encode(v, inner) for v in value) + newline + "]"
    raise _NotPlain


def _key(key: Any) -> str:
    if isinstance(key, str):
        return encode_basestring_ascii(key)
    if isinstance(key, float):
        return '"' + _float(key) + '"'
    if key is True:
        return '"true"'
    if key is False:
        return '"false"'
    if key is None:
        return '"null"'
    if isinstance(key, int):
        return '"' + int.__repr__(key) + '"'
    raise _NotPlain


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value == INFINITY:
        return "Infinity"
    if value == -INFINITY:
        return "-Infinity"
    return float.__repr__(value)
