"""checkov's Kubernetes checks on every rendered overlay: they pass but for the suppressions in checkov-suppressions.yaml, each with its reason, none of them stale.

checkov lives in its own venv, .venv-checkov, made by `make checkov` (which `make test` runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifests import DEPLOY, HERE, OVERLAYS, Obj  # deploy/tests is not a package: found through the path above

CHECKOV = DEPLOY.parent / ".venv-checkov" / "bin" / "checkov"
SUPPRESSIONS: list[dict[str, Any]] = yaml.safe_load((HERE / "checkov-suppressions.yaml").read_text())


def failed_checks(manifest: Path) -> set[tuple[str, str]]:
    """(check id, resource) of every check checkov fails on one manifest file, run offline."""
    if not CHECKOV.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHECKOV} is missing: `make checkov` makes it")
        pytest.skip("checkov is not installed: run `make checkov`")
    done = subprocess.run([str(CHECKOV), "--framework", "kubernetes", "--skip-download", "--output", "json",
                           "--file", str(manifest)], capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no report (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    reports = report if isinstance(report, list) else [report]
    assert any(r.get("summary", {}).get("passed") for r in reports), f"checkov checked nothing in {manifest}"
    return {(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]}


def write(objects: list[Obj], path: Path) -> Path:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return path


def test_every_suppression_names_its_check_overlays_and_reason() -> None:
    for entry in SUPPRESSIONS:
        assert set(entry) == {"check", "name", "overlays", "reason"}, entry
        assert entry["check"].startswith("CKV") and set(entry["overlays"]) <= set(OVERLAYS)
        assert len(entry["reason"].split()) >= 10, f"{entry['check']}: say why, in a sentence or two"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_passes_but_for_listed_suppressions(rendered: dict[str, list[Obj]], overlay: str,
                                                     tmp_path: Path) -> None:
    failed = failed_checks(write(rendered[overlay], tmp_path / f"{overlay}.yaml"))
    allowed = {e["check"] for e in SUPPRESSIONS if overlay in e["overlays"]}
    unexpected = sorted(f"{check} on {resource}" for check, resource in failed if check not in allowed)
    assert not unexpected, "checkov findings without a suppression:\n" + "\n".join(unexpected)
    stale = allowed - {check for check, _ in failed}
    assert not stale, f"suppressions {overlay} no longer needs: {sorted(stale)}"


def test_the_checkov_run_finds_a_weakened_pod(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    """checkov really checks what we render: a privileged, root-capable pod is reported."""
    objects = [o for o in rendered["dev"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "telemetry"]
    container = objects[0]["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True}
    try:
        failed = {check for check, _ in failed_checks(write(objects, tmp_path / "weak.yaml"))}
    finally:  # the session's rendering is shared: put it back
        container["securityContext"] = {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_22"} <= failed  # privileged, escalation, writable root
