"""A stand-in for a service's health port, to run the images' and compose's health-check commands against."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Health(http.server.BaseHTTPRequestHandler):
    status = 200
    """What `path` answers (any other path: 404)."""
    path_served = "/livez"

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == self.path_served else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(path: str) -> Iterator[tuple[int, type[Health]]]:
    """(port, handler class) answering on `path` only: set the class's `status` to change the answer."""
    handler = type("Handler", (Health,), {"path_served": path})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def check_passes(command: list[str], port: int) -> bool:
    """Run a health-check command (its `python` with this interpreter) against AE_HEALTH_PORT=port."""
    argv = [sys.executable, *command[1:]] if command[0] == "python" else command
    done = subprocess.run(argv, env={"AE_HEALTH_PORT": str(port)}, capture_output=True, timeout=30)
    return done.returncode == 0
