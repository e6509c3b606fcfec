"""The Kubernetes manifests (deploy/kubernetes): every overlay renders, every object is valid for the
Kubernetes API (or its CRD), every container is probed, bounded and locked down, only the contract's
Secrets are referenced, and the NetworkPolicies open exactly the flows the services need."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_engine.contracts.subjects import PARTITIONS, TOOL_GATE_DURABLE, partition_durable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifests import (  # deploy/tests is not a package: found through the path above
    DEPLOY,
    HERE,
    KUBERNETES,
    OVERLAYS,
    Obj,
    name_of,
    of_kind,
    problems_of,
    render,
)

SERVICES = ("guardrails", "router", "agent-runner", "tool-runner", "telemetry", "dashboard")
SCALED = ("guardrails", "router", "agent-runner", "tool-runner")
"""The durable consumers of stream AE_EVENTS, each scaled by KEDA on its lag. Telemetry is not scaled."""

SECRETS = {*(f"agent-engine-{s}-nats" for s in SERVICES), "agent-engine-master-key", "agent-engine-postgres",
           "agent-engine-provider", "agent-engine-nats-auth", "agent-engine-dashboard"}
"""The Secrets of the deployment contract: created by the operator, referenced, never committed."""


def containers(deployment: Obj) -> list[Obj]:
    spec = deployment["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


# --- rendering and schemas ---------------------------------------------------------------------------

def test_every_overlay_renders_the_six_services(rendered: dict[str, list[Obj]]) -> None:
    for overlay, objects in rendered.items():
        assert sorted(of_kind(objects, "Deployment")) == sorted(SERVICES), overlay
        assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {"agent-engine"}
        unlabelled = [name_of(o) for o in objects
                      if o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "agent-engine"]
        assert not unlabelled, f"{overlay}: without app.kubernetes.io/part-of: {unlabelled}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_for_the_kubernetes_api(rendered: dict[str, list[Obj]], overlay: str) -> None:
    problems = [p for obj in rendered[overlay] for p in problems_of(obj)]
    assert not problems, "\n".join(problems)


def test_the_nats_policy_and_the_cnpg_cluster_are_valid() -> None:
    objects = [*yaml.safe_load_all((DEPLOY / "nats" / "network-policy.yaml").read_text()),
               *render(KUBERNETES / "postgres-cnpg")]
    assert {o["kind"] for o in objects} == {"NetworkPolicy", "Namespace", "Cluster"}
    problems = [p for obj in objects for p in problems_of(obj)]
    assert not problems, "\n".join(problems)


def test_validation_refuses_a_misspelt_field(rendered: dict[str, list[Obj]]) -> None:
    """The checks above can fail: a typo in a container or a ScaledObject is refused, as kubectl would."""
    deployment = copy.deepcopy(of_kind(rendered["production"], "Deployment")["router"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    assert any("livenessprobe" in p for p in problems_of(deployment))
    scaled = copy.deepcopy(of_kind(rendered["production"], "ScaledObject")["router"])
    scaled["spec"]["minReplicas"] = 2
    assert any("minReplicas" in p for p in problems_of(scaled))


# --- every container ---------------------------------------------------------------------------------

def pod_problems(deployment: Obj) -> list[str]:
    """What the deployment contract and the secure defaults require of a Deployment's pod and containers."""
    name, spec = deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]
    found = []
    want_pod = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}
    context = spec.get("securityContext", {})
    found += [f"{name}: pod securityContext.{k} is {context.get(k)!r}, not {v!r}"
              for k, v in want_pod.items() if context.get(k) != v]
    if spec.get("automountServiceAccountToken") is not False:
        found.append(f"{name}: mounts a service account token")
    if spec.get("terminationGracePeriodSeconds") != 30:
        found.append(f"{name}: terminationGracePeriodSeconds is not 30")
    if spec.get("serviceAccountName") != name:
        found.append(f"{name}: runs as service account {spec.get('serviceAccountName')!r}, not its own")
    writable = {m["mountPath"] for c in containers(deployment) for m in c.get("volumeMounts", [])
                if not m.get("readOnly")}
    if "/tmp" not in writable:
        found.append(f"{name}: no writable /tmp on its read-only root")
    for c in containers(deployment):
        where = f"{name}/{c['name']}"
        for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet", {})
            if (get.get("path"), get.get("port")) != (path, "health"):
                found.append(f"{where}: {probe} is not GET {path} on port health")
        web = [("web", 8780)] if name == "dashboard" else []  # the one service people call
        if [(p.get("name"), p.get("containerPort")) for p in c.get("ports", [])] != [("health", 8080), *web]:
            found.append(f"{where}: ports are not just health 8080" + (" and web 8780" if web else ""))
        for bound in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(c.get("resources", {}).get(bound, {}))
            if missing:
                found.append(f"{where}: no {bound} for {', '.join(sorted(missing))}")
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            found.append(f"{where}: root filesystem is writable")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            found.append(f"{where}: capabilities are not exactly drop ALL")
        if sc.get("privileged"):
            found.append(f"{where}: privileged")
        if not c.get("image", "").startswith(f"agent-engine/{name}:"):
            found.append(f"{where}: image {c.get('image')!r} is not agent-engine/{name} with a tag")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_probed_bounded_and_locked_down(rendered: dict[str, list[Obj]], overlay: str) -> None:
    problems = [p for d in of_kind(rendered[overlay], "Deployment").values() for p in pod_problems(d)]
    assert not problems, "\n".join(problems)


def test_the_pod_check_catches_a_weakened_pod(rendered: dict[str, list[Obj]]) -> None:
    deployment = copy.deepcopy(of_kind(rendered["dev"], "Deployment")["tool-runner"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    del container["readinessProbe"]
    container["securityContext"]["capabilities"] = {"add": ["NET_ADMIN"], "drop": ["ALL"]}
    del container["resources"]["limits"]
    found = "\n".join(pod_problems(deployment))
    assert "readinessProbe" in found and "capabilities" in found and "no limits" in found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_account_budget_and_health_service(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    accounts, budgets, services = (of_kind(objects, k) for k in ("ServiceAccount", "PodDisruptionBudget", "Service"))
    assert sorted(accounts) == sorted(budgets) == sorted(services) == sorted(SERVICES)
    assert all(a.get("automountServiceAccountToken") is False for a in accounts.values())
    for name, service in services.items():  # only the health port: for Prometheus later, nothing calls in
        web = [("web", 8780)] if name == "dashboard" else []  # but people call the dashboard
        assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("health", 8080), *web], name
        assert service["spec"]["selector"] == {"app.kubernetes.io/name": name}
    for name, budget in budgets.items():
        assert budget["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": name}}


def test_the_router_names_each_replica_after_its_pod(rendered: dict[str, list[Obj]]) -> None:
    for objects in rendered.values():
        env = {e["name"]: e for e in of_kind(objects, "Deployment")["router"]["spec"]["template"]["spec"]
               ["containers"][0]["env"]}
        assert env["AE_ROUTER_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        assert env["AE_MASTER_KEY_FILE"]["value"] == "/var/run/agent-engine/master-key/master.key"


# --- Secrets -----------------------------------------------------------------------------------------

def secret_references(node: Any) -> set[str]:
    """Every Secret name an object refers to: volumes, env, envFrom and projected sources."""
    found = set()
    if isinstance(node, dict):
        if "secretName" in node:
            found.add(node["secretName"])
        for key in ("secretKeyRef", "secretRef", "secret"):
            if isinstance(node.get(key), dict) and "name" in node[key]:
                found.add(node[key]["name"])
        for value in node.values():
            found |= secret_references(value)
    elif isinstance(node, list):
        for value in node:
            found |= secret_references(value)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_contracts_secrets_are_referenced_and_none_is_committed(
        rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    assert not of_kind(objects, "Secret"), "a Secret in the manifests: they are created by the operator"
    for name, deployment in of_kind(objects, "Deployment").items():
        used = secret_references(deployment)
        assert used <= SECRETS, f"{name} refers to Secrets outside the contract: {used - SECRETS}"
        assert f"agent-engine-{name}-nats" in used, f"{name} does not mount its own NATS credential"
        assert not {f"agent-engine-{s}-nats" for s in SERVICES if s != name} & used, f"{name} mounts another's credential"
        assert ("agent-engine-master-key" in used) == (name == "router")
        assert ("agent-engine-provider" in used) == (name == "agent-runner")
        assert ("agent-engine-postgres" in used) == (name in ("router", "agent-runner", "tool-runner", "telemetry"))
        assert ("agent-engine-dashboard" in used) == (name == "dashboard")


def test_the_secret_check_sees_every_kind_of_reference() -> None:
    pod = {"volumes": [{"secret": {"secretName": "a"}}, {"projected": {"sources": [{"secret": {"name": "b"}}]}}],
           "containers": [{"env": [{"valueFrom": {"secretKeyRef": {"name": "c", "key": "k"}}}],
                           "envFrom": [{"secretRef": {"name": "d"}}]}]}
    assert secret_references(pod) == {"a", "b", "c", "d"}


# --- NetworkPolicies ---------------------------------------------------------------------------------

def selected(selector: Obj, apps: set[str]) -> set[str]:
    """The services a podSelector picks, by app.kubernetes.io/name (an empty selector picks all)."""
    picked = set(apps)
    for key, value in selector.get("matchLabels", {}).items():
        assert key == "app.kubernetes.io/name", f"selector on {key}: the checks know only service names"
        picked &= {value}
    for expr in selector.get("matchExpressions", []):
        assert (expr["key"], expr["operator"]) == ("app.kubernetes.io/name", "In"), expr
        picked &= set(expr["values"])
    return picked


def peer(rule_peer: Obj) -> str:
    """A readable name of one `from`/`to` entry."""
    if "ipBlock" in rule_peer:
        block = rule_peer["ipBlock"]
        return "ip " + block["cidr"] + "".join(f" -{e}" for e in block.get("except", []))
    namespace = rule_peer.get("namespaceSelector")
    pods = rule_peer.get("podSelector")
    ns = "this namespace" if namespace is None else \
        "any namespace" if namespace == {} else "namespace " + namespace["matchLabels"]["kubernetes.io/metadata.name"]
    labels = "any pod" if not pods else ",".join(f"{k}={v}" for k, v in sorted(pods["matchLabels"].items()))
    return f"{ns} / {labels}"


def flows(policies: list[Obj], apps: set[str]) -> set[tuple[str, str, str, str]]:
    """Every (service, direction, peer, port/protocol) the policies allow. A rule without ports or
    peers is an error here: it would open every port or every peer."""
    allowed = set()
    for policy in policies:
        spec = policy["spec"]
        for direction, peers_key in (("egress", "to"), ("ingress", "from")):
            for rule in spec.get(direction, []):
                assert rule.get("ports"), f"{name_of(policy)}: a {direction} rule opens every port"
                peers = [peer(p) for p in rule.get(peers_key, [])] or ["anywhere"]
                for app in selected(spec["podSelector"], apps):
                    for p in peers:
                        for port in rule["ports"]:
                            allowed.add((app, direction, p, f"{port['port']}/{port['protocol']}"))
    return allowed


DNS = "namespace kube-system / k8s-app=kube-dns"
NATS = "namespace nats / app.kubernetes.io/component=nats,app.kubernetes.io/name=nats"
POSTGRES = "namespace agent-engine-postgres / any pod"
PUBLIC = "ip 0.0.0.0/0 -10.0.0.0/8 -172.16.0.0/12 -192.168.0.0/16 -169.254.0.0/16 -100.64.0.0/10"


def expected_flows(postgres: str) -> set[tuple[str, str, str, str]]:
    expected = set()
    for app in SERVICES:
        expected |= {(app, "egress", DNS, "53/UDP"), (app, "egress", DNS, "53/TCP"),
                     (app, "egress", NATS, "4222/TCP"), (app, "ingress", "anywhere", "8080/TCP")}
    expected |= {(app, "egress", postgres, "5432/TCP")
                 for app in ("router", "agent-runner", "tool-runner", "telemetry")}
    expected.add(("agent-runner", "egress", PUBLIC, "443/TCP"))
    expected.add(("dashboard", "ingress", "anywhere", "8780/TCP"))
    return expected


def default_denies(policies: list[Obj]) -> bool:
    return any(p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_services_flows(rendered: dict[str, list[Obj]], overlay: str) -> None:
    policies = list(of_kind(rendered[overlay], "NetworkPolicy").values())
    assert default_denies(policies), "no default deny of ingress and egress for the whole namespace"
    allowed = flows(policies, set(SERVICES))
    expected = expected_flows(POSTGRES)
    assert allowed == expected, f"beyond the list: {sorted(allowed - expected)}; missing: {sorted(expected - allowed)}"
    assert {f[3].split("/")[0] for f in allowed} == {"53", "4222", "5432", "443", "8080", "8780"}


def test_the_postgres_cidr_component_moves_only_the_postgres_flow(tmp_path: Path) -> None:
    """An operator with a managed PostgreSQL outside the cluster adds components/postgres-cidr."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    def relative(path: Path) -> str:  # kustomize takes no absolute paths
        return os.path.relpath(path.resolve(), overlay)

    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [relative(KUBERNETES / "overlays" / "production")],
        "components": [relative(KUBERNETES / "components" / "postgres-cidr")]}))
    policies = list(of_kind(render(overlay), "NetworkPolicy").values())
    assert flows(policies, set(SERVICES)) == expected_flows("ip 192.0.2.0/24")


def test_the_policy_check_catches_an_extra_opening(rendered: dict[str, list[Obj]]) -> None:
    policies = copy.deepcopy(list(of_kind(rendered["dev"], "NetworkPolicy").values()))
    llm = next(p for p in policies if p["metadata"]["name"] == "allow-llm-provider")
    llm["spec"]["egress"][0]["ports"].append({"protocol": "TCP", "port": 22})
    assert ("agent-runner", "egress", PUBLIC, "22/TCP") in flows(policies, set(SERVICES))
    llm["spec"]["egress"][0].pop("ports")
    with pytest.raises(AssertionError, match="opens every port"):
        flows(policies, set(SERVICES))


def test_the_nats_pods_admit_clients_routes_and_only_keda_on_monitoring() -> None:
    (policy,) = yaml.safe_load_all((DEPLOY / "nats" / "network-policy.yaml").read_text())
    assert policy["metadata"]["namespace"] == "nats" and policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "nats",
                                                             "app.kubernetes.io/component": "nats"}
    rules = {(peer(p), f"{port['port']}/{port['protocol']}")
             for rule in policy["spec"]["ingress"] for p in rule["from"] for port in rule["ports"]}
    assert rules == {("any namespace / any pod", "4222/TCP"),
                     ("this namespace / app.kubernetes.io/component=nats,app.kubernetes.io/name=nats", "6222/TCP"),
                     ("namespace keda / app=keda-operator", "8222/TCP")}


# --- overlays ----------------------------------------------------------------------------------------

def config(objects: list[Obj], prefix: str) -> dict[str, str]:
    (found,) = [o["data"] for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(prefix)]
    return dict(found)


def test_dev_runs_one_small_replica_each_with_the_mock_provider(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["dev"]
    for name, deployment in of_kind(objects, "Deployment").items():
        assert deployment["spec"]["replicas"] == 1, name
        assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "256Mi"
    assert config(objects, "agent-engine-agent-runner-config-")["AE_PROVIDER"] == "mock"
    assert config(objects, "agent-engine-config-")["AE_STREAM_REPLICAS"] == "1"
    assert not of_kind(objects, "ScaledObject")


def test_production_is_highly_available(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["production"]
    deployments, scaled = of_kind(objects, "Deployment"), of_kind(objects, "ScaledObject")
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert sorted(scaled) == sorted(SCALED)
    for name in SCALED:  # KEDA's HPA owns the count; a declared count would be reset by every apply
        assert "replicas" not in deployments[name]["spec"], name
        assert scaled[name]["spec"]["minReplicaCount"] >= 2
        assert budgets[name]["spec"] == {"minAvailable": 1, "selector": budgets[name]["spec"]["selector"]}
    assert deployments["telemetry"]["spec"]["replicas"] == 1  # a second would fold the same stream in turns
    assert budgets["telemetry"]["spec"]["maxUnavailable"] == 1  # minAvailable 1 would block node drains
    for name, deployment in deployments.items():
        spec = deployment["spec"]["template"]["spec"]
        keys = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
        assert set(keys) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        assert all("app.kubernetes.io/name" in c["matchLabelKeys"] for c in keys.values())
        assert spec["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
        assert spec["containers"][0]["imagePullPolicy"] == "Always"
    assert config(objects, "agent-engine-config-")["AE_STREAM_REPLICAS"] == "3"
    assert config(objects, "agent-engine-agent-runner-config-")["AE_PROVIDER"] == "anthropic"


# --- KEDA --------------------------------------------------------------------------------------------

def test_scaled_objects_use_the_nats_jetstream_scaler_as_keda_documents_it(rendered: dict[str, list[Obj]]) -> None:
    scaler = yaml.safe_load((HERE / "crds" / "keda" / "nats-jetstream-scaler.json").read_text())
    known = {p["name"] for p in scaler["parameters"]}
    required = {p["name"] for p in scaler["parameters"] if not p.get("optional") and "default" not in p}
    deployments = of_kind(rendered["production"], "Deployment")
    for name, scaled in of_kind(rendered["production"], "ScaledObject").items():
        assert scaled["spec"]["scaleTargetRef"] == {"name": name} and name in deployments
        assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
        consumers = []
        for trigger in scaled["spec"]["triggers"]:
            metadata = trigger["metadata"]
            assert trigger["type"] == "nats-jetstream"
            assert set(metadata) <= known, f"{name}: parameters KEDA does not know: {set(metadata) - known}"
            assert required <= set(metadata), f"{name}: missing {required - set(metadata)}"
            assert all(isinstance(v, str) for v in metadata.values()), "trigger metadata values are strings"
            assert (metadata["account"], metadata["stream"]) == ("$G", "AE_EVENTS")
            # the headless Service, so KEDA reaches the consumer's leader as <pod>.nats-headless (kedacore/keda#3860)
            assert metadata["natsServerMonitoringEndpoint"] == "nats-headless.nats.svc.cluster.local:8222"
            assert int(metadata["lagThreshold"]) > 0 and int(metadata["activationLagThreshold"]) >= 0
            consumers.append(metadata["consumer"])
        # every durable the service reads: the router's shared one and each partition's
        expected = ([name] + ([partition_durable(p) for p in range(PARTITIONS)] if name == "router" else [])
                    + ([TOOL_GATE_DURABLE] if name == "guardrails" else []))
        assert sorted(consumers) == sorted(expected), name
        if name == "router":
            assert scaled["spec"]["maxReplicaCount"] <= PARTITIONS, "a router beyond the partitions gets no work"


# --- PostgreSQL --------------------------------------------------------------------------------------

def test_the_cnpg_cluster_lives_where_the_engine_may_reach_it(rendered: dict[str, list[Obj]]) -> None:
    objects = render(KUBERNETES / "postgres-cnpg")
    (cluster,) = of_kind(objects, "Cluster").values()
    assert cluster["metadata"]["namespace"] == "agent-engine-postgres"
    assert POSTGRES.startswith(f"namespace {cluster['metadata']['namespace']} ")
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["bootstrap"]["initdb"]["database"] == "agent_engine"
