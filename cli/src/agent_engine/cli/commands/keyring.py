"""`agentctl keyring init DIR`: the credentials of a deployed stack (docker compose, Kubernetes), made once.

The local stack makes its keyring itself (`agentctl up`); a deployment has no such step, so an operator (or the
compose file's one-shot `keyring` service) runs this once. It writes each service's credential, the platform
administrator's, the NATS server's authorization block and the router's master key, and never replaces a key
that exists: running it again only fills in what is missing and re-renders auth.conf from what is there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent_engine.cli.client import CliError
from agent_engine.cli.options import Subparsers
from agent_engine.cli.stack import SERVICES, _master_key_file
from agent_engine.contracts.credentials import CredentialError
from agent_engine.runtime.keyring import SERVICES as CREDENTIALED
from agent_engine.runtime.keyring import Keyring

AUTH_CONF = "auth.conf"
MASTER_KEY = "master.key"


def register(sub: Subparsers) -> None:
    group = sub.add_parser("keyring", help="make the credentials of a deployed stack (compose, Kubernetes)",
                           description="The credentials a deployed stack runs with. The local stack (agentctl up) "
                           "makes its own; a docker compose or Kubernetes deployment gets them from `keyring init`.")
    cmds = group.add_subparsers(dest="keyring_command", required=True, metavar="COMMAND")
    init = cmds.add_parser(
        "init", help="write every service's credential, the admin's, auth.conf and the master key into DIR",
        description="Write into DIR: services/<service>.json (each service's NATS credential), platform/admin.json "
        "(the platform administrator's), auth.conf (the NATS server's authorization block, to include in its "
        "configuration) and master.key (the router's, 32 random bytes as hex). Every file is readable by its owner "
        "only. Idempotent: a key that exists is kept, never replaced; auth.conf is rendered again from the keys "
        "and the tenant credentials issued since. Prints what it wrote and how to hand the files to docker "
        "compose or Kubernetes.")
    init.add_argument("dir", type=Path, metavar="DIR", help="the keyring directory (made if missing)")
    init.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    root: Path = args.dir
    keyring = Keyring(root)
    files = [*(keyring.service(name) for name in CREDENTIALED), keyring.admin, root / MASTER_KEY]
    existed = {path: path.exists() for path in files}
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        keyring.ensure_platform()
        _master_key_file(root / MASTER_KEY)
        keyring.write_conf(root / AUTH_CONF)
    except NotADirectoryError:
        raise CliError(f"keyring init: {root} (or a directory above it) is a file, not a directory") from None
    except OSError as exc:
        raise CliError(f"keyring init: cannot write {exc.filename or root}: {exc.strerror}") from None
    except CredentialError as exc:  # a damaged credential file: say which, never overwrite it
        raise CliError(f"keyring init: {exc}") from None
    print(f"keyring {root}:")
    for path in files:
        print(f"  {'kept' if existed[path] else 'made'}   {path.relative_to(root)}")
    print(f"  wrote  {AUTH_CONF} (the NATS server's authorization block: every key above and each tenant's)")
    print(next_steps(root))
    return 0


def next_steps(root: Path) -> str:
    engine, nats = "kubectl -n agent-engine create secret generic", "kubectl -n nats create secret generic"
    secrets = [f"{engine} agent-engine-{name}-nats --from-file=credential.json={root / 'services' / f'{name}.json'}"
               for name in SERVICES]
    secrets += [f"{engine} agent-engine-master-key --from-file=master.key={root / MASTER_KEY}",
                f"{engine} agent-engine-postgres --from-literal=url='postgresql://USER:PASSWORD@HOST:5432/DB'",
                f"{engine} agent-engine-provider --from-file=anthropic-api-key=FILE   # only for AE_PROVIDER=anthropic",
                f"{nats} agent-engine-nats-auth --from-file=auth.conf={root / AUTH_CONF}"]
    lines = [
        "",
        "Next steps",
        "  docker compose: docker-compose.yml's one-shot `keyring` service runs this into the keyring volume, and each",
        "  service mounts only its own file from there. After `agentctl tenant add` or `revoke`, reload NATS:",
        "    docker compose kill -s HUP nats",
        "  Kubernetes (docs/kubernetes.md): create the Secrets from these files:",
        *(f"    {line}" for line in secrets),
        "  After `agentctl tenant add` or `revoke` on this directory, replace the NATS servers' Secret:",
        f"    {nats} agent-engine-nats-auth --from-file=auth.conf={root / AUTH_CONF} "
        "--dry-run=client -o yaml | kubectl apply -f -",
        f"  Keep {root} private: platform/admin.json may do anything on the bus, master.key opens every stored record.",
    ]
    return "\n".join(lines)
