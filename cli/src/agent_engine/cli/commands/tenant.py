"""`agentctl tenant add/list/revoke/declare`: the credentials other systems and people use to reach one tenant
(and `tenant forget`, erasing its data, which lives in forget.py).

A credential is a file with an nkey seed (see contracts.credentials). The platform administrator issues it
from the stack's keyring (AE_CREDENTIALS_DIR, default <AE_HOME>/credentials); a tenant's admin, acting with
its admin credential, asks the stack's credential authority over the bus instead (cli/authority.py): it
makes the key pair itself and sends only the public key. Either way the NATS server learns the key and its
permissions at once, and forgets them on revoke (closing its connections).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import get_args

from agent_engine.cli.client import CliError, ask, credential
from agent_engine.cli.commands.forget import register_forget
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.cli.stack import Stack
from agent_engine.contracts.credentials import ROLES, Credential, Role
from agent_engine.contracts.envelope import TENANT_PATTERN
from agent_engine.contracts.subjects import AUTH_RPC, IDENTITY_PATTERN
from agent_engine.runtime.auth import new_seed, public_key
from agent_engine.runtime.keyring import Keyring, KeyringError, write_secret

TENANT_GROUP: list[argparse.ArgumentParser] = []


def register(sub: Subparsers) -> None:
    group = sub.add_parser("tenant", help="issue, list and revoke tenant credentials; declare a tenant; "
                           "forget its data",
                           description="Tenant credentials: what another system (or a person) connects with. "
                           f"Roles: {', '.join(ROLES)}; each may do what the one before may, and more.")
    TENANT_GROUP.append(group)
    cmds = group.add_subparsers(dest="tenant_command", required=True, metavar="COMMAND")
    add = cmds.add_parser("add", help="issue a credential for a tenant; prints the file it wrote")
    add.add_argument("name", help="the tenant")
    add.add_argument("--user", default="client", help="the credential's name within the tenant: what its "
                     "requests and decisions are recorded under (default: client)")
    add.add_argument("--role", default="submitter", choices=get_args(Role),
                     help="viewer: read events and ask about tasks; submitter: + submit tasks (default); "
                     "operator: + approve, reject, cancel, fork; admin: + push the tenant's workflows")
    add.add_argument("--out", help="also write the new credential file here (a tenant admin's default: "
                     "./<tenant>-<user>.json; the platform's is kept under the keyring as well)")
    add.set_defaults(func=cmd_add)
    ls = cmds.add_parser("list", help="the credentials issued (public keys only)")
    ls.add_argument("name", nargs="?", help="only this tenant's")
    add_json(ls)
    ls.set_defaults(func=cmd_list)
    rv = cmds.add_parser("revoke", help="revoke a tenant's credential (or all of them): its connections close")
    rv.add_argument("name", help="the tenant")
    rv.add_argument("--user", help="only this credential (default: every credential of the tenant)")
    rv.set_defaults(func=cmd_revoke)
    dc = cmds.add_parser("declare", help="serve a tenant that has no credential: open its artifact bucket to "
                         "the services (a tenant with a credential is served already)",
                         description="The services may use the artifact buckets of the tenants the keyring "
                         "serves only (docs/security.md): each tenant issued a credential, and each declared here. "
                         "Declare a tenant whose tasks only the platform submits before its tasks produce large "
                         "outputs. The platform's keyring only; the NATS server reloads it.")
    dc.add_argument("name", help="the tenant")
    dc.set_defaults(func=cmd_declare)
    register_forget(cmds)


def _check(pattern: str, value: str, what: str) -> None:
    if not re.match(pattern, value):
        raise CliError(f"{what} {value!r} is not valid: use 1 to 64 letters, digits, '_' or '-'")


def _told(keyring: Keyring) -> str:
    count = len(keyring.servers())
    if count:
        return f"the NATS server{'s' if count > 1 else ''} reloaded it"
    # a server in another container or pod is none of ours to signal: not an error, but it must be reloaded
    return (f"no nats-server started on this keyring is running here, so none was reloaded: the change takes effect "
            f"when the server that includes {keyring.root / 'auth.conf'} reloads it (docker compose: "
            "`docker compose kill -s HUP nats`; Kubernetes: update the agent-engine-nats-auth Secret)")


def _tenant_admin(tenant: str) -> Credential | None:
    """The tenant admin credential agentctl acts with, if it does (then requests go to the authority)."""
    cred = credential()
    if cred is None or cred.kind != "tenant":
        return None
    if cred.tenant != tenant:
        raise CliError(f"credential {cred.identity} may manage tenant '{cred.tenant}' only, not '{tenant}'")
    return cred


def cmd_add(args: argparse.Namespace) -> int:
    _check(TENANT_PATTERN, args.name, "tenant name")
    _check(IDENTITY_PATTERN, args.user, "user name")
    if _tenant_admin(args.name):
        seed = new_seed()
        ask(AUTH_RPC, "credential.add", {"user": args.user, "role": args.role, "public_key": public_key(seed)})
        out = Path(args.out or f"{args.name}-{args.user}.json")
        write_secret(out, Credential(kind="tenant", tenant=args.name, user=args.user, role=args.role,
                                      seed=seed).model_dump_json(exclude_none=True) + "\n")
        print(out)
        print(f"issued {args.role} credential '{args.user}' of tenant '{args.name}' through the authority; "
              "hand the file over securely", file=sys.stderr)
        return 0
    keyring = Stack.load().keyring.ensure_platform()
    try:
        path = keyring.issue(args.name, args.user, args.role)
    except KeyringError as exc:
        raise CliError(str(exc)) from None
    if args.out:
        write_secret(Path(args.out), path.read_text())
        path = Path(args.out)
    print(path)
    print(f"issued {args.role} credential '{args.user}' of tenant '{args.name}'; {_told(keyring)}. "
          f"Hand the file over securely; connect with AE_NATS_CREDENTIAL={path} (see docs/security.md).",
          file=sys.stderr)
    return 0


def cmd_declare(args: argparse.Namespace) -> int:
    _check(TENANT_PATTERN, args.name, "tenant name")
    cred = credential()
    if cred is not None and cred.kind != "platform":
        raise CliError(f"credential {cred.identity} may not declare a tenant: only the platform administrator "
                       "(the stack's keyring) may")
    keyring = Stack.load().keyring.ensure_platform()
    try:
        new = keyring.declare(args.name)
    except KeyringError as exc:
        raise CliError(str(exc)) from None
    if new:
        print(f"tenant '{args.name}' is served: its artifact bucket is open to the services; {_told(keyring)}")
    else:
        print(f"tenant '{args.name}' was declared already")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    cred = credential()
    if cred is not None and cred.kind == "tenant":
        _tenant_admin(args.name or str(cred.tenant))
        entries = ask(AUTH_RPC, "credential.list", {})["credentials"]
    else:
        entries = [e for e in Stack.load().keyring.registry() if not args.name or e["tenant"] == args.name]
    if args.json:
        print_json(entries)
        return 0
    if not entries:
        print("no tenant credentials issued" + (f" for tenant '{args.name}'" if args.name else ""))
        return 0
    print(f"{'TENANT':<20} {'USER':<16} {'ROLE':<10} {'ISSUED':<26} PUBLIC KEY")
    for e in entries:
        print(f"{e['tenant']:<20} {e['user']:<16} {e['role']:<10} {e['issued']:<26} {e['public_key']}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if _tenant_admin(args.name):
        if not args.user:
            raise CliError("a tenant admin revokes one credential at a time: name it with --user")
        for e in ask(AUTH_RPC, "credential.revoke", {"user": args.user})["revoked"]:
            print(f"revoked {e['role']} credential '{e['user']}' of tenant '{e['tenant']}'; its connections close")
        return 0
    keyring = Stack.load().keyring
    try:
        gone = keyring.revoke(args.name, args.user)
    except KeyringError as exc:
        raise CliError(str(exc)) from None
    for e in gone:
        print(f"revoked {e['role']} credential '{e['user']}' of tenant '{e['tenant']}'")
    print(_told(keyring))
    return 0
