"""One log format for every service: timestamp, service, level, message."""

from __future__ import annotations

import logging
import os
import sys


def setup(service: str) -> logging.Logger:
    logging.basicConfig(
        level=os.environ.get("AE_LOG_LEVEL", "INFO"),
        stream=sys.stderr,
        format=f"%(asctime)s {service} %(levelname)s %(message)s",
    )
    logging.getLogger("nats").setLevel(logging.WARNING)
    return logging.getLogger(service)
