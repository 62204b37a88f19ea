"""The deployment files (infra/deploy/generate.py): current, generated from the catalog and the
registry, and valid — offline, with pinned validators (kubernetes-validate for built-in kinds,
our own JSON schemas for the Strimzi and KEDA resources, compose-spec for the compose file)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.deploy import generate
from schemas import topics
from streams import registry

ROOT = generate.ROOT
SCHEMAS = ROOT / "infra/deploy/schemas"
#: Kubernetes versions the built-in kinds are checked against (oldest supported, newest bundled).
K8S_VERSIONS = ("1.30.0", "1.37.0")
CRD_SCHEMAS = {
    ("kafka.strimzi.io/v1", "KafkaTopic"): "strimzi-kafkatopic.json",
    ("kafka.strimzi.io/v1", "KafkaConnect"): "strimzi-kafkaconnect.json",
    ("kafka.strimzi.io/v1", "KafkaConnector"): "strimzi-kafkaconnector.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json",
}
INSTALL = "./dev setup installs it (pyproject.toml's test extra); or: pip install -e '.[test]'"


def need(module: str, pin: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{pin} is missing: {INSTALL}")


@pytest.fixture(scope="module")
def files() -> dict[Path, str]:
    return generate.render()


def docs_of(files: dict[Path, str], under: Path = generate.K8S_DIR) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for path, text in files.items():
        if str(path).startswith(str(under)) and path.name != "kustomization.yaml":
            out += [(path, d) for d in yaml.safe_load_all(text) if d]
    return out


def by_kind(files: dict[Path, str], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in docs_of(files) if d["kind"] == kind}


# -- current --------------------------------------------------------------------------------
def test_committed_files_are_current(files: dict[Path, str]) -> None:
    stale = generate.stale(files)
    assert not stale, f"stale generated files {stale}: run python -m infra.deploy.generate and commit"


def test_the_command_regenerates_the_committed_files_into_a_temp_dir(tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    assert generate.main(["--out", str(out), "--compose", str(tmp_path / "compose.yaml"),
                          "--milvus-values", str(tmp_path / "milvus-values.yaml")]) == 0
    written = sorted(p.relative_to(out) for p in out.rglob("*.yaml"))
    committed = sorted(p.relative_to(ROOT / generate.K8S_DIR) for p in (ROOT / generate.K8S_DIR).rglob("*.yaml"))
    assert written == committed
    for rel in written:
        assert (out / rel).read_text() == (ROOT / generate.K8S_DIR / rel).read_text(), rel
    assert (tmp_path / "compose.yaml").read_text() == (ROOT / generate.COMPOSE_FILE).read_text()
    assert (tmp_path / "milvus-values.yaml").read_text() == (ROOT / generate.MILVUS_VALUES).read_text()
    assert generate.main(["--check", "--out", str(out), "--compose", str(tmp_path / "compose.yaml"),
                          "--milvus-values", str(tmp_path / "milvus-values.yaml")]) == 0
    (out / "topics.yaml").write_text("# edited by hand\n")
    assert generate.main(["--check", "--out", str(out), "--compose", str(tmp_path / "compose.yaml"),
                          "--milvus-values", str(tmp_path / "milvus-values.yaml")]) == 1


def test_the_environment_does_not_leak_into_the_files(files: dict[Path, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGSTREAM_PARTITIONS", "17")
    monkeypatch.setenv("RAGSTREAM_KAFKA_BOOTSTRAP", "elsewhere:9092")
    assert generate.render() == files


# -- from the one catalog and the one registry ------------------------------------------------
def test_every_topic_of_the_catalog_is_a_kafkatopic(files: dict[Path, str]) -> None:
    settings = generate.deploy_settings(generate.Target())
    made = by_kind(files, "KafkaTopic")
    assert set(made) == {t.name for t in topics.catalog(settings)}
    for t in topics.catalog(settings):
        spec = made[t.name]["spec"]
        assert (spec["topicName"], spec["partitions"], spec["replicas"]) == (t.name, t.partitions, 3)
        assert spec["config"] == t.config


def test_every_stage_of_the_registry_is_a_deployment_scaled_on_its_lag(files: dict[Path, str]) -> None:
    settings = generate.deploy_settings(generate.Target())
    catalog = {t.name: t for t in topics.catalog(settings)}
    deployments, scaled = by_kind(files, "Deployment"), by_kind(files, "ScaledObject")
    assert set(deployments) == set(scaled) == {f"ragstream-{s.name}" for s in registry.STAGES}
    for spec in registry.STAGES:
        name = f"ragstream-{spec.name}"
        worker = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert worker["command"] == ["ragstream", "worker", spec.name]
        port = spec.metrics_port(settings)
        assert worker["ports"] == [{"name": "metrics", "containerPort": port}]
        assert {"name": "RAGSTREAM_METRICS_HOST", "value": "0.0.0.0"} in worker["env"]  # reachable in the pod
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert worker[probe]["httpGet"] == {"path": spec.health, "port": port}
        pod = deployments[name]["spec"]["template"]
        assert len(pod["spec"]["containers"]) == 1 and pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        so = scaled[name]["spec"]
        assert so["scaleTargetRef"]["name"] == name
        triggers = so["triggers"]
        assert {t["metadata"]["consumerGroup"] for t in triggers} == {name}
        inputs = [t for t in (*spec.inputs, *(e.topic for e in spec.extra_inputs))]
        assert [t["metadata"].get("topic", "cdc.*") for t in triggers] == inputs
        assert so["maxReplicaCount"] == max(catalog[t].partitions if t in catalog else settings.partitions
                                            for t in inputs)
    # audit and dsr read one-partition topics: one replica, the registry's docstring says why
    assert scaled["ragstream-audit"]["spec"]["maxReplicaCount"] == 1
    assert scaled["ragstream-dsr"]["spec"]["maxReplicaCount"] == 1


def test_optional_stages_and_connect_are_a_component(files: dict[Path, str]) -> None:
    base = yaml.safe_load(files[generate.K8S_DIR / "kustomization.yaml"])
    cdc = yaml.safe_load(files[generate.K8S_DIR / "cdc" / "kustomization.yaml"])
    assert cdc["kind"] == "Component"
    for spec in registry.STAGES:
        assert (f"stage-{spec.name}.yaml" in (cdc if spec.optional else base)["resources"])
    for kustomization, folder in ((base, generate.K8S_DIR), (cdc, generate.K8S_DIR / "cdc")):
        listed = set(kustomization["resources"])
        present = {p.name for p in files if p.parent == folder and p.name != "kustomization.yaml"}
        assert listed == present


def test_a_change_to_the_catalog_changes_the_topics(files: dict[Path, str]) -> None:
    def catalog(settings: Any) -> tuple[Any, ...]:
        specs = [dataclasses.replace(t, partitions=12) if t.name == topics.CHUNKS else t
                 for t in topics.catalog(settings)]
        return (*specs, topics.TopicSpec("rag.graph", 6, {"cleanup.policy": "delete"}, None, "a new topic",
                                         replication_factor=3))

    changed = generate.render(catalog=catalog)
    made = by_kind(changed, "KafkaTopic")
    assert "rag.graph" in made and "rag.graph" not in by_kind(files, "KafkaTopic")
    assert made[topics.CHUNKS]["spec"]["partitions"] == 12
    # the embed stage reads rag.chunks: it may now scale to 12 replicas
    assert by_kind(changed, "ScaledObject")["ragstream-embed"]["spec"]["maxReplicaCount"] == 12
    assert changed[generate.K8S_DIR / "topics.yaml"] != files[generate.K8S_DIR / "topics.yaml"]


def test_a_change_to_the_registry_changes_the_deployments(files: dict[Path, str]) -> None:
    free = max(s.port_offset for s in registry.STAGES) + 1
    extra = registry.StageSpec("summary", "document summaries into a store", (topics.DOCUMENTS,), (), free,
                               lambda s, p: None)
    stages = tuple(dataclasses.replace(s, inputs=(topics.CHANGES,)) if s.name == "chunk" else s
                   for s in registry.STAGES) + (extra,)
    changed = generate.render(stages=stages)
    path = generate.K8S_DIR / "stage-summary.yaml"
    assert path in changed and path not in files
    assert "stage-summary.yaml" in yaml.safe_load(changed[generate.K8S_DIR / "kustomization.yaml"])["resources"]
    deployment = by_kind(changed, "Deployment")["ragstream-summary"]
    worker = deployment["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"] == ["ragstream", "worker", "summary"]
    assert worker["livenessProbe"]["httpGet"]["port"] == 9300 + free
    trigger = by_kind(changed, "ScaledObject")["ragstream-chunk"]["spec"]["triggers"][0]["metadata"]
    assert trigger["topic"] == topics.CHANGES
    assert "graph" in yaml.safe_load(changed[generate.COMPOSE_FILE])["services"]


# -- measured resources, secrets by reference --------------------------------------------------
def test_memory_requests_come_from_the_committed_benchmark(files: dict[Path, str]) -> None:
    bench = json.loads((ROOT / generate.BENCH).read_text())["runs"][0]["worker_peak_rss_mib"]
    deployments = by_kind(files, "Deployment")
    for stage, peak in bench.items():
        resources = deployments[f"ragstream-{stage}"]["spec"]["template"]["spec"]["containers"][0]["resources"]
        want = math.ceil(peak * 1.25 / 64) * 64
        assert resources["requests"]["memory"] == f"{want}Mi", stage
        assert str(peak) in deployments[f"ragstream-{stage}"]["metadata"]["annotations"]["ragstream.io/resources-from"]
    normalize = deployments["ragstream-normalize"]["metadata"]["annotations"]["ragstream.io/resources-from"]
    assert normalize.startswith("not measured")


def _walk(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        found.append(node)
        for v in node.values():
            found += _walk(v)
    elif isinstance(node, list):
        for v in node:
            found += _walk(v)
    return found


def test_secrets_are_referenced_never_written(files: dict[Path, str]) -> None:
    from ragstream.settings import SECRET_FIELDS

    assert not by_kind(files, "Secret")
    env = [e for _, d in docs_of(files) for e in _walk(d) if "name" in e and ("value" in e or "valueFrom" in e)]
    secret_names = {f"RAGSTREAM_{f.upper()}" for f in SECRET_FIELDS} | {"RAGSTREAM_CDC_PASSWORD"}
    seen = set()
    for e in env:
        if e["name"] in secret_names:
            assert "value" not in e and "secretKeyRef" in e["valueFrom"], e
            seen.add(e["name"])
    assert seen == secret_names
    connector = by_kind(files, "KafkaConnector")["ragstream-postgres"]["spec"]["config"]
    assert connector["database.password"] == "${env:RAGSTREAM_CDC_PASSWORD}"
    compose = yaml.safe_load(files[generate.COMPOSE_FILE])
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if key in secret_names:
                assert value is None, (name, key)  # passed through from the caller's environment


# -- valid -------------------------------------------------------------------------------------
def test_built_in_kinds_validate_strictly(files: dict[Path, str]) -> None:
    kv = need("kubernetes_validate", "kubernetes-validate==1.37.0")
    checked = 0
    for path, doc in docs_of(files):
        if (doc["apiVersion"], doc["kind"]) in CRD_SCHEMAS:
            continue
        for version in K8S_VERSIONS:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{path} {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc}")
        checked += 1
    assert checked >= 10  # 7 Deployments, 3 ConfigMaps/PVC


def test_custom_resources_validate_against_their_schemas(files: dict[Path, str]) -> None:
    jsonschema = need("jsonschema", "jsonschema==4.25.1")
    validators = {k: jsonschema.Draft202012Validator(json.loads((SCHEMAS / f).read_text()))
                  for k, f in CRD_SCHEMAS.items()}
    kinds = set()
    for path, doc in docs_of(files):
        key = (doc["apiVersion"], doc["kind"])
        if key in validators:
            errors = [f"{list(e.path)}: {e.message}" for e in validators[key].iter_errors(doc)]
            assert not errors, f"{path} {doc['kind']}/{doc['metadata']['name']}: {errors}"
            kinds.add(key)
    assert kinds == set(CRD_SCHEMAS)


def test_the_schemas_catch_mistakes() -> None:
    jsonschema = need("jsonschema", "jsonschema==4.25.1")
    scaled = json.loads((SCHEMAS / "keda-scaledobject.json").read_text())
    bad = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
           "spec": {"scaleTargetRef": {"name": "x"}, "triggers": [{"type": "kafka", "metadata": {
               "bootstrapServers": "b:9092", "consumerGroup": "g", "lagThreshhold": "5"}}]}}
    assert not jsonschema.Draft202012Validator(scaled).is_valid(bad)  # misspelt key, no lagThreshold
    topic = json.loads((SCHEMAS / "strimzi-kafkatopic.json").read_text())
    assert not jsonschema.Draft202012Validator(topic).is_valid(
        {"apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaTopic",
         "metadata": {"name": "t", "labels": {"strimzi.io/cluster": "c"}}, "spec": {"partitions": 0, "replicas": 1}})


def test_the_compose_file_is_valid(files: dict[Path, str]) -> None:
    compose_spec = need("compose_spec", "compose-spec==0.2.1")
    text = files[generate.COMPOSE_FILE]
    try:
        parsed = compose_spec.PyCompose.from_yaml(text)
    except ValueError as exc:
        pytest.fail(f"{generate.COMPOSE_FILE}: {exc}")
    compose = yaml.safe_load(text)
    services = set(compose["services"])
    assert set(parsed.service_names()) == services
    assert {s.name for s in registry.STAGES} <= services
    for name, service in compose["services"].items():
        assert set(service.get("depends_on", {})) <= services, name  # compose-spec does not check this
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], (name, volume)
        if name in registry.BY_NAME:
            assert service["command"] == ["ragstream", "worker", name]
            assert ("profiles" in service) == registry.BY_NAME[name].optional


def test_milvus_values_name_the_chart_keys_we_mean(files: dict[Path, str]) -> None:
    values = yaml.safe_load(files[generate.MILVUS_VALUES])
    assert values["cluster"]["enabled"] is False
    assert not {"accessKey", "secretKey"} & set(values["minio"])  # credentials at install time, not here
    assert values["metrics"]["enabled"] is True
