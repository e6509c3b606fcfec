"""Load a workflow directory into one WorkflowManifest, with errors that name the file and node.

    DIR/workflow.yaml     name, description, nodes, edges
    DIR/agents.yaml       agents: {name: {provider, model, system, prompt, output_schema, max_tokens}}
    DIR/tools.yaml        tools: {name: {builtin, description, side_effects}}
    DIR/schemas/*.json    output schemas, named by file stem
    DIR/mock/*.json       mock provider scripts, one file per node (an object, or a list per attempt)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from pydantic import ValidationError

from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.validation import ManifestError, validate


@dataclass
class Loaded:
    directory: Path
    manifest: WorkflowManifest | None = None
    revision: str = ""
    errors: list[ManifestError] = field(default_factory=list)


def load(directory: Path) -> Loaded:
    result = Loaded(directory)
    if not directory.is_dir():
        result.errors.append(ManifestError(".", None, "directory", "is not a directory"))
        return result
    files = manifest_files(directory)
    result.revision = revision(directory, files)
    workflow = _yaml(directory / "workflow.yaml", result.errors, required=True)
    agents = _yaml(directory / "agents.yaml", result.errors).get("agents", {})
    tools = _yaml(directory / "tools.yaml", result.errors).get("tools", {})
    schemas = {p.stem: _json(p, result.errors) for p in sorted(directory.glob("schemas/*.json"))}
    mock = {}
    for path in sorted(directory.glob("mock/*.json")):
        script = _json(path, result.errors)
        mock[path.stem] = script if isinstance(script, list) else [script]
    if result.errors:
        return result
    body = {**workflow, "agents": agents, "tools": tools, "schemas": schemas, "mock": mock}
    try:
        manifest = WorkflowManifest.model_validate(body)
    except ValidationError as exc:
        result.errors.extend(_model_errors(exc, body))
        return result
    result.errors.extend(validate(manifest))
    result.errors.extend(schema_errors(manifest))
    result.manifest = manifest
    return result


def schema_errors(manifest: WorkflowManifest) -> list[ManifestError]:
    """Output schemas and tools' args_schema that are not valid JSON Schemas (draft 2020-12): the runners
    and the router would otherwise find out at run time."""
    found = [(f"schemas/{name}.json", "", schema) for name, schema in manifest.schemas.items()]
    found += [("tools.yaml", f"tool '{name}' args_schema ", tool.args_schema)
              for name, tool in manifest.tools.items() if tool.args_schema is not None]
    errors = []
    for file, what, schema in found:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(map(str, exc.absolute_path)) or "(root)"
            errors.append(ManifestError(file, None, "json-schema",
                                        f"{what}is not a valid JSON Schema at {where}: {exc.message}"))
        except RecursionError:
            errors.append(ManifestError(file, None, "json-schema", f"{what}nests too deeply to check"))
    return errors


def manifest_files(directory: Path) -> list[Path]:
    names = ["workflow.yaml", "agents.yaml", "tools.yaml"]
    found = [directory / n for n in names if (directory / n).exists()]
    return found + sorted(directory.glob("schemas/*.json")) + sorted(directory.glob("mock/*.json"))


def revision(directory: Path, files: list[Path]) -> str:
    """SHA-256 over every manifest file's relative path and bytes: the workflow revision id."""
    digest = hashlib.sha256()
    for path in files:
        try:
            content = path.read_bytes()
        except OSError:  # reported by the loader, naming the file; no revision is pushed then
            content = b""
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + content + b"\0")
    return digest.hexdigest()


def _yaml(path: Path, errors: list[ManifestError], *, required: bool = False) -> dict[str, Any]:
    if not path.exists():
        if required:
            errors.append(ManifestError(path.name, None, "file", "missing: every workflow needs workflow.yaml"))
        return {}
    text = _text(path, path.name, errors)
    if text is None:
        return {}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        errors.append(ManifestError(path.name, None, "yaml", str(exc).replace("\n", " ")))
        return {}
    except RecursionError:
        errors.append(ManifestError(path.name, None, "yaml", "nests too deeply to read"))
        return {}
    if not isinstance(data, dict):
        errors.append(ManifestError(path.name, None, "yaml", "top level must be a mapping"))
        return {}
    return data


def _json(path: Path, errors: list[ManifestError]) -> Any:
    name = f"{path.parent.name}/{path.name}"
    text = _text(path, name, errors)
    if text is None:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        errors.append(ManifestError(name, None, "json", str(exc)))
    except RecursionError:
        errors.append(ManifestError(name, None, "json", "nests too deeply to read"))
    return {}


def _text(path: Path, name: str, errors: list[ManifestError]) -> str | None:
    """The file as UTF-8 text, or None with an error naming the file and what is wrong with it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        errors.append(ManifestError(name, None, "file", f"cannot be read: {exc.strerror or exc}"))
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.append(ManifestError(name, None, "encoding", f"is not UTF-8 text: byte 0x{raw[exc.start]:02x} at "
                                                            f"offset {exc.start} cannot be decoded; save it as UTF-8"))
        return None


def _model_errors(exc: ValidationError, body: dict[str, Any]) -> list[ManifestError]:
    out = []
    for e in exc.errors():
        loc = list(e["loc"])
        file, node = "workflow.yaml", None
        if loc and loc[0] in ("agents", "tools"):
            file = f"{loc[0]}.yaml"
        elif loc and loc[0] == "schemas":
            file = f"schemas/{loc[1]}.json" if len(loc) > 1 else "schemas/"
        elif loc and loc[0] == "mock":
            file = f"mock/{loc[1]}.json" if len(loc) > 1 else "mock/"
        elif loc and loc[0] == "nodes" and len(loc) > 1 and isinstance(loc[1], int):
            nodes = body.get("nodes") or []
            if loc[1] < len(nodes) and isinstance(nodes[loc[1]], dict):
                node = str(nodes[loc[1]].get("id", f"#{loc[1]}"))
        where = ".".join(str(p) for p in loc)
        out.append(ManifestError(file, node, "schema", f"{where}: {e['msg']}"))
    return out
