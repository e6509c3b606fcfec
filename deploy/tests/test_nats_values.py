"""deploy/nats/values.yaml against the official NATS chart (nats-io/k8s 2.14.2). The chart ships no
values.schema.json and helm is not installed here, so the values are checked against the chart's own
default values (vendored in nats-chart/): every key we set is one the chart reads, and what we mount
and include fits together. Rendering the chart itself needs helm (docs/kubernetes.md)."""

from __future__ import annotations

import posixpath
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifests import (  # deploy/tests is not a package: found through the path above
    DEPLOY,
    HERE,
    KUBERNETES,
    problems_of,
)

VALUES: dict[str, Any] = yaml.safe_load((DEPLOY / "nats" / "values.yaml").read_text())
CHART: dict[str, Any] = yaml.safe_load((HERE / "nats-chart" / "values.yaml").read_text())
RELEASE, NAMESPACE = "nats", "nats"
"""`helm install nats nats/nats --namespace nats`, as docs/kubernetes.md says: the chart names its
Services after the release (nats, nats-headless)."""
CONFIG_DIR = "/etc/nats-config"  # where the chart mounts nats.conf; include paths are relative to it


def unknown_keys(ours: Any, chart: Any, path: str = "") -> list[str]:
    """Keys of ours the chart's defaults do not have. A default of {} or [] (merge, patch, env,
    resources...) or an empty value is free-form: anything below it is the user's."""
    if not isinstance(ours, dict) or not isinstance(chart, dict) or chart == {}:
        return []
    found = []
    for key, value in ours.items():
        if key not in chart:
            found.append(f"{path}{key}")
        else:
            found += unknown_keys(value, chart[key], f"{path}{key}.")
    return found


DEV: dict[str, Any] = yaml.safe_load((DEPLOY / "nats" / "values-dev.yaml").read_text())


def test_every_key_is_one_the_chart_reads() -> None:
    for values in (VALUES, DEV):
        assert not unknown_keys(values, CHART), unknown_keys(values, CHART)


def test_the_dev_values_make_one_server_that_fits_one_node() -> None:
    assert DEV["config"]["cluster"]["enabled"] is False  # the chart then runs one replica
    assert DEV["podTemplate"]["topologySpreadConstraints"] == {"kubernetes.io/hostname": None}
    assert set(VALUES["podTemplate"]["topologySpreadConstraints"]) == {"kubernetes.io/hostname"}


def test_the_key_check_catches_a_typo() -> None:
    assert unknown_keys({"config": {"jetstream": {"fileStor": {}}}}, CHART) == ["config.jetstream.fileStor"]


def test_a_three_node_jetstream_cluster_on_persistent_volumes_with_monitoring() -> None:
    config = VALUES["config"]
    assert config["cluster"] == {"enabled": True, "replicas": 3}
    store = config["jetstream"]["fileStore"]
    assert config["jetstream"]["enabled"] and store["enabled"] and store["pvc"]["enabled"]
    assert config["monitor"] == {"enabled": True, "port": 8222}


def test_the_authorization_secret_is_mounted_where_the_config_includes_it() -> None:
    (mount_patch,) = VALUES["container"]["patch"]
    (volume_patch,) = VALUES["podTemplate"]["patch"]
    assert (mount_patch["op"], mount_patch["path"]) == ("add", "/volumeMounts/-")
    assert (volume_patch["op"], volume_patch["path"]) == ("add", "/spec/volumes/-")
    mount, volume = mount_patch["value"], volume_patch["value"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "agent-engine-nats-auth"
    (item,) = volume["secret"]["items"]
    assert item == {"key": "auth.conf", "path": "auth.conf"}
    included = posixpath.normpath(posixpath.join(CONFIG_DIR, VALUES["config"]["merge"]["$include"]))
    assert included == posixpath.join(mount["mountPath"], item["path"])
    # the reloader follows the nats container's mounts under these prefixes: a rotated Secret reloads
    assert any(mount["mountPath"].startswith(p) for p in CHART["reloader"]["natsVolumeMountPrefixes"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nats-0"},
           "spec": {"containers": [{"name": "nats", "image": "nats", "volumeMounts": [mount]}], "volumes": [volume]}}
    assert not problems_of(pod)


def test_the_engine_and_keda_find_the_charts_services() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "base" / "kustomization.yaml").read_text())
    (shared,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "agent-engine-config"]
    literals = dict(line.split("=", 1) for line in shared["literals"])
    assert literals["AE_NATS_URL"] == f"nats://{RELEASE}.{NAMESPACE}.svc.cluster.local:{CHART['config']['nats']['port']}"
    scaled = yaml.safe_load_all((KUBERNETES / "components" / "keda" / "scaled-objects.yaml").read_text())
    endpoints = {s["spec"]["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"] for s in scaled}
    assert endpoints == {f"{RELEASE}-headless.{NAMESPACE}.svc.cluster.local:{VALUES['config']['monitor']['port']}"}
