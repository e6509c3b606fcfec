"""`agentctl tenant ...`: what concerns one tenant as a whole. Each action lives in its own module and
registers itself here (`forget`: erasure, in forget.py)."""

from __future__ import annotations

from agent_engine.cli.commands.forget import register_forget
from agent_engine.cli.options import Subparsers


def register(sub: Subparsers) -> None:
    tenant = sub.add_parser("tenant", help="a tenant as a whole: forget (erase its data)")
    tenant_sub = tenant.add_subparsers(dest="tenant_command", required=True, metavar="ACTION")
    register_forget(tenant_sub)
