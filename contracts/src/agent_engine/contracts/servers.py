"""How the NATS servers to connect to are written: one URL, or a comma-separated list of a cluster's URLs
(`AE_NATS_URL=nats://nats-0:4222,nats://nats-1:4222,nats://nats-2:4222`).

nats-py takes a list of URLs and tries them in turn (and learns the cluster's other members from the server
it reaches), but it reads a single string as one URL, commas and all: every client of the bus splits here.
"""

from __future__ import annotations

from collections.abc import Sequence

NATS_URL_ENV = "AE_NATS_URL"


def server_list(value: str | Sequence[str], name: str = NATS_URL_ENV) -> list[str]:
    """The URLs of `value` (a string with commas, or a list of URLs), each stripped of spaces. Raises ValueError
    naming `name` for an empty value or an empty item (`a,,b`, a trailing comma)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    urls = [item.strip() for item in items]
    shown = value if isinstance(value, str) else ",".join(value)
    if not any(urls):
        raise ValueError(f"{name} is empty: give a NATS URL (nats://host:4222) or a comma-separated list of a "
                         "cluster's URLs")
    for position, url in enumerate(urls, 1):
        if not url:
            raise ValueError(f"{name}={shown!r} has an empty item (number {position}): separate URLs with single "
                             "commas, with no comma at either end")
        if any(c.isspace() for c in url):
            raise ValueError(f"{name}={shown!r}: item {url!r} has a space inside it; separate URLs with commas")
    return urls
