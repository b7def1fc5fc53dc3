"""The Kubernetes manifests in deploy/k8s (issue 5): probes, resources, security
context, secrets only by reference, the migration Job, the monthly audit archive
CronJob and its volume, the daily access report CronJob, the Service, availability
and the kustomization.

Each check is a small function returning a list of problems. The positive tests run
them on the shipped manifests and expect none; the negative tests break one manifest in
memory and expect the matching check to say so, which keeps the checks honest.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML; installed with the dev extras (through moto and schemathesis)

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
ALERT_RULES = K8S_DIR.parent / "prometheus" / "keysafe-alerts.yaml"
PORT = 8787
IMAGE = "ghcr.io/keysafe/keysafe"
SECRET_REFS = {"KEYSAFE_MASTER_KEY", "KEYSAFE_DATABASE_URL"}
LOCAL_CONFIG = "config.kubernetes.io/local-config"
# Values that only stand in for a secret.
PLACEHOLDER = re.compile(r"^(|REPLACE_ME[A-Z0-9_]*|CHANGE_ME[A-Z0-9_]*|<[^<>]*>)$")
# A 32-byte key in base64, a keysafe API token, a URL carrying a password.
CREDENTIAL_TEXT = [
    re.compile(r"[A-Za-z0-9+/]{43}="),
    re.compile(r"\bks_[A-Za-z0-9_-]{16,}"),
    re.compile(r"://[^/\s:@]+:[^@\s]+@"),
]

Doc = dict[str, Any]
Manifests = list[tuple[str, Doc]]  # (file name, document)


# -- loading -----------------------------------------------------------------------


def yaml_files(directory: Path = K8S_DIR) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml"))


def load_manifests(directory: Path = K8S_DIR) -> Manifests:
    out: Manifests = []
    for path in yaml_files(directory):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path.name, doc))
    return out


def of_kind(manifests: Manifests, kind: str) -> list[Doc]:
    return [doc for _, doc in manifests if doc.get("kind") == kind]


def pod_spec(workload: Doc) -> Doc:
    if workload.get("kind") == "CronJob":
        workload = workload["spec"]["jobTemplate"]
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def workloads(manifests: Manifests) -> list[Doc]:
    return (of_kind(manifests, "Deployment") + of_kind(manifests, "Job")
            + of_kind(manifests, "CronJob"))


def where(workload: Doc, container: Doc | None = None) -> str:
    name = f"{workload['kind']}/{workload['metadata']['name']}"
    return name if container is None else f"{name} container {container.get('name')!r}"


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


# -- checks ------------------------------------------------------------------------


def check_probes(deployment: Doc) -> list[str]:
    problems = []
    for c in deployment["spec"]["template"]["spec"]["containers"]:
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = (c.get(probe) or {}).get("httpGet")
            if not get:
                problems.append(f"{where(deployment, c)}: no {probe} with httpGet")
                continue
            if get.get("path") != path:
                problems.append(f"{where(deployment, c)}: {probe} path is "
                                f"{get.get('path')!r}, expected {path}")
            port = ports.get(get.get("port"), get.get("port"))
            if port != PORT:
                problems.append(f"{where(deployment, c)}: {probe} port resolves to "
                                f"{port!r}, expected {PORT}")
    return problems


def check_resources(workload: Doc) -> list[str]:
    problems = []
    for c in containers(workload):
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for what in ("cpu", "memory"):
                if not (res.get(part) or {}).get(what):
                    problems.append(f"{where(workload, c)}: no resources.{part}.{what}")
    return problems


def check_security(workload: Doc) -> list[str]:
    spec = pod_spec(workload)
    pod = spec.get("securityContext") or {}
    problems = []
    if pod.get("runAsNonRoot") is not True:
        problems.append(f"{where(workload)}: pod securityContext.runAsNonRoot is not true")
    if not (isinstance(pod.get("runAsUser"), int) and pod["runAsUser"] > 0):
        problems.append(f"{where(workload)}: pod securityContext.runAsUser is not non-zero")
    if (pod.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append(f"{where(workload)}: pod seccompProfile is not RuntimeDefault")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"{where(workload)}: {flag} is set")
    for c in containers(workload):
        sc = c.get("securityContext") or {}
        here = where(workload, c)
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{here}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{here}: readOnlyRootFilesystem is not true")
        if sc.get("privileged"):
            problems.append(f"{here}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{here}: capabilities do not drop ALL")
        if caps.get("add"):
            problems.append(f"{here}: capabilities add {caps['add']}")
        if sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is not True:
            problems.append(f"{here}: runAsNonRoot is not true")
        uid = sc.get("runAsUser", pod.get("runAsUser"))
        if not (isinstance(uid, int) and uid > 0):
            problems.append(f"{here}: runAsUser is not non-zero")
        seccomp = sc.get("seccompProfile", pod.get("seccompProfile")) or {}
        if seccomp.get("type") != "RuntimeDefault":
            problems.append(f"{here}: seccompProfile is not RuntimeDefault")
    return problems


def is_sensitive(name: str) -> bool:
    bare = name.upper().removeprefix("KEYSAFE_")  # every keysafe variable says KEY
    return any(w in bare for w in ("KEY", "SECRET", "TOKEN", "PASSWORD", "DATABASE_URL"))


def check_env_secrets(workload: Doc, secret_names: set[str]) -> list[str]:
    """Sensitive variables come from a Secret by reference; no literal value anywhere
    looks like a credential."""
    problems = []
    for c in containers(workload):
        here = where(workload, c)
        env = env_of(c)
        for name, e in env.items():
            if is_sensitive(name):
                if "value" in e:
                    problems.append(f"{here}: {name} has a literal value")
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if not ref:
                    problems.append(f"{here}: {name} is not from a secretKeyRef")
                elif ref.get("name") not in secret_names:
                    problems.append(f"{here}: {name} refers to Secret {ref.get('name')!r}, "
                                    "which deploy/k8s does not describe")
            value = str(e.get("value", ""))
            if "postgres://" in value or "postgresql://" in value:
                problems.append(f"{here}: {name} holds a database URL inline")
            if any(p.search(value) for p in CREDENTIAL_TEXT):
                problems.append(f"{here}: {name} holds something shaped like a credential")
        for name in sorted(SECRET_REFS - set(env)):
            problems.append(f"{here}: {name} is missing")
    return problems


def check_env_values(workload: Doc, expected: dict[str, str]) -> list[str]:
    problems = []
    for c in pod_spec(workload)["containers"]:
        env = env_of(c)
        for name, want in expected.items():
            got = (env.get(name) or {}).get("value")
            if got != want:
                problems.append(f"{where(workload, c)}: {name} is {got!r}, expected {want!r}")
    return problems


def check_home_volume(workload: Doc) -> list[str]:
    """KEYSAFE_HOME must be writable with a read-only root filesystem: an emptyDir."""
    spec = pod_spec(workload)
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    problems = []
    for c in spec["containers"]:
        home = (env_of(c).get("KEYSAFE_HOME") or {}).get("value")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        if not home:
            problems.append(f"{where(workload, c)}: KEYSAFE_HOME is not set")
        elif mounts.get(home) not in empty_dirs:
            problems.append(f"{where(workload, c)}: KEYSAFE_HOME {home} is not an emptyDir")
    return problems


def check_server(deployment: Doc) -> list[str]:
    problems = check_env_values(deployment, {
        "KEYSAFE_BACKEND": "postgres", "KEYSAFE_ENV": "production",
        "KEYSAFE_HOST": "0.0.0.0", "KEYSAFE_DB_AUTO_UPGRADE": "0",
    })
    for c in pod_spec(deployment)["containers"]:
        if [*c.get("command", []), *c.get("args", [])][:2] != ["keysafe", "serve"]:
            problems.append(f"{where(deployment, c)}: does not run `keysafe serve`")
        if not str(c.get("image", "")).startswith(IMAGE + ":"):
            problems.append(f"{where(deployment, c)}: image is not {IMAGE}")
    return problems + check_home_volume(deployment)


def check_job(job: Doc) -> list[str]:
    spec = job["spec"]
    problems = []
    if pod_spec(job).get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(f"{where(job)}: restartPolicy is not Never or OnFailure")
    if not (isinstance(spec.get("backoffLimit"), int) and spec["backoffLimit"] >= 0):
        problems.append(f"{where(job)}: no backoffLimit")
    runs = [[*c.get("command", []), *c.get("args", [])][:3] for c in pod_spec(job)["containers"]]
    if ["keysafe", "db", "upgrade"] not in runs:
        problems.append(f"{where(job)}: does not run `keysafe db upgrade`")
    problems += check_env_values(job, {"KEYSAFE_BACKEND": "postgres"})
    return problems + check_home_volume(job)


def check_cronjob(cron: Doc) -> list[str]:
    """What every CronJob needs: never overlapping itself, bounded, keysafe's image, the
    production store without migrating it, a writable home."""
    spec = cron["spec"]
    job = spec.get("jobTemplate", {}).get("spec", {})
    problems = []
    if len(str(spec.get("schedule", "")).split()) != 5:
        problems.append(f"{where(cron)}: schedule is not a five-field cron expression")
    if spec.get("concurrencyPolicy") != "Forbid":
        problems.append(f"{where(cron)}: concurrencyPolicy is not Forbid")
    if not isinstance(job.get("activeDeadlineSeconds"), int):
        problems.append(f"{where(cron)}: no activeDeadlineSeconds")
    if not (isinstance(job.get("backoffLimit"), int) and job["backoffLimit"] >= 0):
        problems.append(f"{where(cron)}: no backoffLimit")
    if pod_spec(cron).get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(f"{where(cron)}: restartPolicy is not Never or OnFailure")
    for c in pod_spec(cron)["containers"]:
        if not str(c.get("image", "")).startswith(IMAGE + ":"):
            problems.append(f"{where(cron, c)}: image is not {IMAGE}")
    problems += check_env_values(cron, {"KEYSAFE_BACKEND": "postgres",
                                        "KEYSAFE_ENV": "production",
                                        "KEYSAFE_DB_AUTO_UPGRADE": "0"})
    return problems + check_home_volume(cron)


def check_archive_cronjob(cron: Doc, claims: set[str]) -> list[str]:
    """The audit archive: archiving to a volume that deploy/k8s claims, then checking
    the file and compacting."""
    problems = []
    pod = pod_spec(cron)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        script = " ".join([*c.get("command", []), *c.get("args", [])])
        if not re.search(r"\bset -e", script):
            problems.append(f"{where(cron, c)}: the script does not stop at a failure "
                            "(set -e)")
        at = -1
        for step in ("keysafe audit archive --before", "keysafe audit verify --archive",
                     "keysafe db compact"):
            found = script.find(step)
            if found < 0:
                problems.append(f"{where(cron, c)}: does not run `{step}`")
            elif found < at:
                problems.append(f"{where(cron, c)}: runs `{step}` out of order")
            at = max(at, found)
        target = re.search(r"(/[^/\"\s]+)/audit-", script)  # the archive directory
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        vol = volumes.get(mounts.get(target[1], "")) if target else None
        claim = ((vol or {}).get("persistentVolumeClaim") or {}).get("claimName")
        if claim not in claims:
            problems.append(f"{where(cron, c)}: the archive file is not written to a "
                            "PersistentVolumeClaim that deploy/k8s describes")
    return problems


def check_report_cronjob(cron: Doc) -> list[str]:
    """The daily access report: `keysafe audit report --check` (a finding fails the
    Job), a finding never retried (only an unreachable store, exit 7, is), and the
    failed Job's name is what the alert rule looks for."""
    problems = []
    for c in pod_spec(cron)["containers"]:
        argv = [*c.get("command", []), *c.get("args", [])]
        if argv[:3] != ["keysafe", "audit", "report"]:
            problems.append(f"{where(cron, c)}: does not run `keysafe audit report`")
        for flag in ("--check", "--since", "--json", "--ignore"):
            if flag not in argv:
                problems.append(f"{where(cron, c)}: `keysafe audit report` without {flag}")
    rules = (cron["spec"]["jobTemplate"]["spec"].get("podFailurePolicy") or {}).get("rules", [])
    retried = [r for r in rules if r.get("action") == "FailJob"
               and (r.get("onExitCodes") or {}).get("operator") == "NotIn"
               and (r.get("onExitCodes") or {}).get("values") == [7]]
    if not retried:
        problems.append(f"{where(cron)}: no podFailurePolicy failing the Job at once on a "
                        "finding (exit codes NotIn [7])")
    if pod_spec(cron).get("restartPolicy") != "Never":
        problems.append(f"{where(cron)}: podFailurePolicy needs restartPolicy Never")
    return problems


#: CronJob name -> its own checks; a CronJob not listed here is a problem.
CRONJOBS: dict[str, Callable[[Doc, set[str]], list[str]]] = {
    "keysafe-audit-archive": check_archive_cronjob,
    "keysafe-access-report": lambda cron, _claims: check_report_cronjob(cron),
}


def check_secret(secret: Doc) -> list[str]:
    name = f"Secret/{secret['metadata']['name']}"
    problems = []
    if secret.get("data"):
        problems.append(f"{name}: has data (base64 is plaintext); create it with kubectl")
    string_data = secret.get("stringData") or {}
    for key, value in string_data.items():
        if not PLACEHOLDER.match(str(value)):
            problems.append(f"{name}: stringData.{key} is not a placeholder")
    annotations = secret["metadata"].get("annotations") or {}
    if string_data and annotations.get(LOCAL_CONFIG) != "true":
        # Applied with the rest, placeholders would overwrite the real values.
        problems.append(f"{name}: has placeholders but is applied by kustomize "
                        f"(annotate {LOCAL_CONFIG}: \"true\")")
    return problems


def check_no_credential_text(directory: Path = K8S_DIR) -> list[str]:
    """Nothing in any file, comments included, looks like a real key, token or password."""
    return [f"{path.name}: line {n} looks like a credential"
            for path in yaml_files(directory)
            for n, line in enumerate(path.read_text().splitlines(), 1)
            for pattern in CREDENTIAL_TEXT
            if (m := pattern.search(line)) and not re.search(r"://[A-Z_]+:[A-Z_]+@", m[0])]


def check_service(service: Doc, deployment: Doc) -> list[str]:
    name = f"Service/{service['metadata']['name']}"
    spec = service["spec"]
    template = deployment["spec"]["template"]
    problems = []
    if spec.get("type", "ClusterIP") != "ClusterIP":
        problems.append(f"{name}: type is {spec.get('type')}, expected ClusterIP")
    labels = template["metadata"].get("labels") or {}
    selector = spec.get("selector") or {}
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append(f"{name}: selector does not match the Deployment's pods")
    container_ports = [p for c in template["spec"]["containers"] for p in c.get("ports", [])]
    port = next((p for p in spec.get("ports", []) if p.get("port") == PORT), None)
    if port is None:
        problems.append(f"{name}: no port {PORT}")
    elif not any(port.get("targetPort", port["port"]) in (p["containerPort"], p.get("name"))
                 for p in container_ports if p["containerPort"] == PORT):
        problems.append(f"{name}: targetPort {port.get('targetPort')!r} is not the "
                        f"container port {PORT}")
    return problems


def check_availability(deployment: Doc, pdbs: list[Doc]) -> list[str]:
    spec = deployment["spec"]
    labels = spec["template"]["metadata"].get("labels") or {}
    problems = []
    if not (isinstance(spec.get("replicas"), int) and spec["replicas"] >= 2):
        problems.append(f"{where(deployment)}: replicas is {spec.get('replicas')!r}, "
                        "expected 2 or more")
    strategy = spec.get("strategy") or {}
    rolling = (strategy.get("type", "RollingUpdate") == "RollingUpdate"
               and (strategy.get("rollingUpdate") or {}).get("maxUnavailable") in (0, "0%"))
    guarded = [
        pdb for pdb in pdbs
        if pdb["spec"].get("minAvailable") not in (None, 0, "0%")
        and (match := (pdb["spec"].get("selector") or {}).get("matchLabels"))
        and all(labels.get(k) == v for k, v in match.items())
    ]
    if not (rolling or guarded):
        problems.append(f"{where(deployment)}: neither a rolling update with "
                        "maxUnavailable 0 nor a PodDisruptionBudget with minAvailable")
    return problems


def check_kustomization(kustomization: Doc, directory: Path = K8S_DIR) -> list[str]:
    listed = list(kustomization.get("resources") or [])
    present = {p.name for p in yaml_files(directory)} - {"kustomization.yaml"}
    problems = [f"kustomization.yaml: {f} is not listed" for f in sorted(present - set(listed))]
    problems += [f"kustomization.yaml: lists {f}, which is not in deploy/k8s"
                 for f in sorted(set(listed) - present)]
    if not kustomization.get("namespace"):
        problems.append("kustomization.yaml: no namespace")
    return problems


def all_problems(manifests: Manifests, directory: Path = K8S_DIR) -> list[str]:
    deployments = of_kind(manifests, "Deployment")
    jobs = of_kind(manifests, "Job")
    services = of_kind(manifests, "Service")
    secrets = of_kind(manifests, "Secret")
    kustomizations = of_kind(manifests, "Kustomization")
    problems = []
    for kind, found in (("Deployment", deployments), ("Job", jobs), ("Service", services),
                        ("CronJob", of_kind(manifests, "CronJob")),
                        ("Secret", secrets), ("Kustomization", kustomizations),
                        ("ServiceAccount", of_kind(manifests, "ServiceAccount"))):
        if not found:
            problems.append(f"no {kind} in deploy/k8s")
    secret_names = {s["metadata"]["name"] for s in secrets}
    for w in workloads(manifests):
        problems += check_resources(w) + check_security(w) + check_env_secrets(w, secret_names)
    for d in deployments:
        problems += check_probes(d) + check_server(d)
        problems += check_availability(d, of_kind(manifests, "PodDisruptionBudget"))
        for s in services:
            problems += check_service(s, d)
    for j in jobs:
        problems += check_job(j)
    claims = {c["metadata"]["name"] for c in of_kind(manifests, "PersistentVolumeClaim")}
    for cron in of_kind(manifests, "CronJob"):
        own = CRONJOBS.get(cron["metadata"]["name"])
        if own is None:
            problems.append(f"{where(cron)}: no checks for this CronJob in this test")
            continue
        problems += check_cronjob(cron) + own(cron, claims)
    missing = set(CRONJOBS) - {c["metadata"]["name"] for c in of_kind(manifests, "CronJob")}
    problems += [f"no CronJob {name} in deploy/k8s" for name in sorted(missing)]
    for s in secrets:
        problems += check_secret(s)
    for k in kustomizations:
        problems += check_kustomization(k, directory)
    return problems


# -- tests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return load_manifests()


def only(manifests: Manifests, kind: str) -> Doc:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def named(manifests: Manifests, kind: str, name: str) -> Doc:
    found = [d for d in of_kind(manifests, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def test_every_yaml_file_parses_and_names_its_kind(manifests: Manifests) -> None:
    assert {name for name, _ in manifests} == {p.name for p in yaml_files()}
    for name, doc in manifests:
        assert doc.get("kind"), name
        assert doc.get("apiVersion"), name
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"], name


def test_shipped_manifests_have_no_problems(manifests: Manifests) -> None:
    assert all_problems(manifests) == []


def test_no_file_contains_credential_text() -> None:
    assert check_no_credential_text() == []


def test_deployment_probes_and_availability(manifests: Manifests) -> None:
    deployment = only(manifests, "Deployment")
    assert check_probes(deployment) == []
    assert check_availability(deployment, of_kind(manifests, "PodDisruptionBudget")) == []
    # Both guards are shipped, not just one of them.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert only(manifests, "PodDisruptionBudget")["spec"]["minAvailable"] >= 1


@pytest.mark.parametrize("kind", ["Deployment", "Job", "CronJob"])
def test_every_container_is_limited_and_locked_down(manifests: Manifests, kind: str) -> None:
    assert of_kind(manifests, kind)
    for workload in of_kind(manifests, kind):
        assert containers(workload)
        assert check_resources(workload) == []
        assert check_security(workload) == []
        assert check_env_secrets(workload, {"keysafe"}) == []


def test_secret_is_a_template_without_values(manifests: Manifests) -> None:
    secret = only(manifests, "Secret")
    assert check_secret(secret) == []
    assert not secret.get("data")
    refs = {e["valueFrom"]["secretKeyRef"]["key"]
            for w in workloads(manifests) for c in containers(w)
            for e in c.get("env", []) if "valueFrom" in e}
    assert refs == SECRET_REFS


def test_migration_job_and_service(manifests: Manifests) -> None:
    assert check_job(only(manifests, "Job")) == []
    assert check_service(only(manifests, "Service"), only(manifests, "Deployment")) == []


def test_audit_archive_cronjob(manifests: Manifests) -> None:
    cron = named(manifests, "CronJob", "keysafe-audit-archive")
    assert check_cronjob(cron) == []
    assert check_archive_cronjob(cron, {"keysafe-audit-archive"}) == []
    assert only(manifests, "PersistentVolumeClaim")["metadata"]["name"] == "keysafe-audit-archive"


def test_access_report_cronjob(manifests: Manifests) -> None:
    cron = named(manifests, "CronJob", "keysafe-access-report")
    assert check_cronjob(cron) == []
    assert check_report_cronjob(cron) == []
    # The alert rule matches the Jobs this CronJob creates (<name>-<schedule time>).
    rules = yaml.safe_load(ALERT_RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]
             if r["alert"] == "KeysafeAccessReportFindings"]
    assert len(exprs) == 1
    pattern = re.search(r'job_name=~"([^"]+)"', exprs[0])
    assert pattern
    assert re.fullmatch(pattern[1], cron["metadata"]["name"] + "-29345678")
    assert not re.fullmatch(pattern[1], "keysafe-audit-archive-29345678")


def test_kustomization_lists_every_file(manifests: Manifests) -> None:
    assert check_kustomization(only(manifests, "Kustomization")) == []


# -- negative tests: each check notices a broken manifest ---------------------------


def _deployment(ms: Manifests) -> Doc:
    return of_kind(ms, "Deployment")[0]


def _job(ms: Manifests) -> Doc:
    return of_kind(ms, "Job")[0]


def _archive(ms: Manifests) -> Doc:
    return named(ms, "CronJob", "keysafe-audit-archive")


def _report(ms: Manifests) -> Doc:
    return named(ms, "CronJob", "keysafe-access-report")


def _cron(ms: Manifests) -> Doc:
    container: Doc = pod_spec(_archive(ms))["containers"][0]
    return container


def _server(ms: Manifests) -> Doc:
    container: Doc = pod_spec(_deployment(ms))["containers"][0]
    return container


def _set_env(container: Doc, name: str, entry: Doc) -> None:
    container["env"] = [e for e in container["env"] if e["name"] != name]
    container["env"].append({"name": name, **entry})


def _replace_pdbs(ms: Manifests) -> None:
    ms[:] = [(n, d) for n, d in ms if d.get("kind") != "PodDisruptionBudget"]


FAKE_KEY = "k1:" + "A" * 43 + "="
BREAKAGES: dict[str, tuple[Callable[[Manifests], None], str]] = {
    "no readiness probe": (
        lambda ms: _server(ms).pop("readinessProbe"), "no readinessProbe"),
    "liveness on the wrong path": (
        lambda ms: _server(ms)["livenessProbe"]["httpGet"].update(path="/readyz"),
        "livenessProbe path"),
    "probe on the wrong port": (
        lambda ms: _server(ms)["readinessProbe"]["httpGet"].update(port=9090),
        "readinessProbe port"),
    "inline master key": (
        lambda ms: _set_env(_server(ms), "KEYSAFE_MASTER_KEY", {"value": FAKE_KEY}),
        "KEYSAFE_MASTER_KEY has a literal value"),
    "inline database URL in the Job": (
        lambda ms: _set_env(containers(_job(ms))[0], "KEYSAFE_DATABASE_URL",
                            {"value": "postgresql://keysafe:hunter2@db/keysafe"}),
        "KEYSAFE_DATABASE_URL has a literal value"),
    "database URL under an innocent name": (
        lambda ms: _set_env(_server(ms), "PGURL", {"value": "postgresql://db/keysafe"}),
        "database URL inline"),
    "inline API token": (
        lambda ms: _set_env(_server(ms), "ADMIN_TOKEN", {"value": "x"}),
        "ADMIN_TOKEN has a literal value"),
    "secret reference dropped": (
        lambda ms: _server(ms).update(env=[e for e in _server(ms)["env"]
                                           if e["name"] != "KEYSAFE_DATABASE_URL"]),
        "KEYSAFE_DATABASE_URL is missing"),
    "no memory limit on the Job": (
        lambda ms: containers(_job(ms))[0]["resources"]["limits"].pop("memory"),
        "no resources.limits.memory"),
    "init container without resources": (
        lambda ms: pod_spec(_deployment(ms)).setdefault("initContainers", []).append(
            {"name": "wait", "image": "busybox", "securityContext":
             copy.deepcopy(_server(ms)["securityContext"])}),
        "'wait': no resources.requests.cpu"),
    "writable root filesystem": (
        lambda ms: _server(ms)["securityContext"].update(readOnlyRootFilesystem=False),
        "readOnlyRootFilesystem is not true"),
    "privilege escalation allowed": (
        lambda ms: containers(_job(ms))[0]["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation is not false"),
    "capabilities kept": (
        lambda ms: _server(ms)["securityContext"].pop("capabilities"),
        "do not drop ALL"),
    "runs as root": (
        lambda ms: _server(ms)["securityContext"].update(runAsUser=0),
        "runAsUser is not non-zero"),
    "pod may run as root": (
        lambda ms: pod_spec(_job(ms))["securityContext"].pop("runAsNonRoot"),
        "pod securityContext.runAsNonRoot"),
    "no seccomp profile": (
        lambda ms: pod_spec(_deployment(ms))["securityContext"].pop("seccompProfile"),
        "seccompProfile is not RuntimeDefault"),
    "Secret with base64 data": (
        lambda ms: of_kind(ms, "Secret")[0].update(data={"KEYSAFE_MASTER_KEY": "c2VjcmV0"}),
        "has data"),
    "Secret with a real value": (
        lambda ms: of_kind(ms, "Secret")[0].update(
            stringData={"KEYSAFE_DATABASE_URL": "postgresql://u:p@db/keysafe"}),
        "stringData.KEYSAFE_DATABASE_URL is not a placeholder"),
    "applied Secret with placeholders": (
        lambda ms: of_kind(ms, "Secret")[0].update(
            metadata={"name": "keysafe"}, stringData={"KEYSAFE_MASTER_KEY": "REPLACE_ME"}),
        "applied by kustomize"),
    "Job restarts forever": (
        lambda ms: pod_spec(_job(ms)).update(restartPolicy="Always"),
        "restartPolicy"),
    "Job without backoffLimit": (
        lambda ms: _job(ms)["spec"].pop("backoffLimit"), "no backoffLimit"),
    "Job runs something else": (
        lambda ms: containers(_job(ms))[0].update(command=["keysafe", "serve"]),
        "does not run `keysafe db upgrade`"),
    "replicas migrate on start": (
        lambda ms: _set_env(_server(ms), "KEYSAFE_DB_AUTO_UPGRADE", {"value": "1"}),
        "KEYSAFE_DB_AUTO_UPGRADE is '1'"),
    "embedded backend": (
        lambda ms: _set_env(_server(ms), "KEYSAFE_BACKEND", {"value": "sqlite"}),
        "KEYSAFE_BACKEND is 'sqlite'"),
    "home on the read-only root": (
        lambda ms: _server(ms).update(volumeMounts=[]),
        "is not an emptyDir"),
    "not the server command": (
        lambda ms: _server(ms).update(command=["python", "-m", "http.server"]),
        "does not run `keysafe serve`"),
    "Service targets another port": (
        lambda ms: of_kind(ms, "Service")[0]["spec"]["ports"][0].update(targetPort=8080),
        "targetPort 8080"),
    "Service selects nothing": (
        lambda ms: of_kind(ms, "Service")[0]["spec"].update(selector={"app": "other"}),
        "selector does not match"),
    "LoadBalancer Service": (
        lambda ms: of_kind(ms, "Service")[0]["spec"].update(type="LoadBalancer"),
        "expected ClusterIP"),
    "one replica": (
        lambda ms: _deployment(ms)["spec"].update(replicas=1), "replicas is 1"),
    "rolling update may drop pods and no PDB": (
        lambda ms: _deployment(ms)["spec"]["strategy"]["rollingUpdate"].update(
            maxUnavailable=1) or _replace_pdbs(ms),
        "neither a rolling update"),
    "archive may overlap itself": (
        lambda ms: _archive(ms)["spec"].update(concurrencyPolicy="Allow"),
        "concurrencyPolicy is not Forbid"),
    "archive never verified": (
        lambda ms: _cron(ms).update(args=[_cron(ms)["args"][0].replace(
            "keysafe audit verify --archive", "true")]),
        "does not run `keysafe audit verify --archive`"),
    "archive to the pod's scratch space": (
        lambda ms: pod_spec(_archive(ms)).update(volumes=[
            v if v["name"] != "archive" else {"name": "archive", "emptyDir": {}}
            for v in pod_spec(_archive(ms))["volumes"]]),
        "not written to a PersistentVolumeClaim"),
    "archive volume not claimed": (
        lambda ms: ms.__setitem__(slice(None), [
            (n, d) for n, d in ms if d.get("kind") != "PersistentVolumeClaim"]),
        "not written to a PersistentVolumeClaim"),
    "archive migrates the schema": (
        lambda ms: _set_env(_cron(ms), "KEYSAFE_DB_AUTO_UPGRADE", {"value": "1"}),
        "KEYSAFE_DB_AUTO_UPGRADE is '1'"),
    "archive script goes on after a failure": (
        lambda ms: _cron(ms).update(args=[_cron(ms)["args"][0].replace("set -eu", "")]),
        "set -e"),
    "compact before the archive": (
        lambda ms: _cron(ms).update(args=["set -e; keysafe db compact; keysafe audit "
                                          "archive --before 90d --to /archive/audit-x.jsonl"
                                          "; keysafe audit verify --archive x"]),
        "runs `keysafe db compact` out of order"),
    "inline master key in the CronJob": (
        lambda ms: _set_env(_cron(ms), "KEYSAFE_MASTER_KEY", {"value": FAKE_KEY}),
        "KEYSAFE_MASTER_KEY has a literal value"),
    "report without --check": (
        lambda ms: pod_spec(_report(ms))["containers"][0]["command"].remove("--check"),
        "without --check"),
    "report retried on a finding": (
        lambda ms: _report(ms)["spec"]["jobTemplate"]["spec"].pop("podFailurePolicy"),
        "no podFailurePolicy"),
    "report migrates the schema": (
        lambda ms: _set_env(pod_spec(_report(ms))["containers"][0],
                            "KEYSAFE_DB_AUTO_UPGRADE", {"value": "1"}),
        "CronJob/keysafe-access-report container 'access-report': KEYSAFE_DB_AUTO_UPGRADE"),
    "report removed": (
        lambda ms: ms.__setitem__(slice(None), [
            (n, d) for n, d in ms if d.get("metadata", {}).get("name")
            != "keysafe-access-report"]),
        "no CronJob keysafe-access-report"),
    "an unchecked CronJob": (
        lambda ms: _report(ms)["metadata"].update(name="keysafe-other"),
        "no checks for this CronJob"),
    "file missing from kustomization": (
        lambda ms: of_kind(ms, "Kustomization")[0]["resources"].remove("pdb.yaml"),
        "pdb.yaml is not listed"),
    "kustomization lists a missing file": (
        lambda ms: of_kind(ms, "Kustomization")[0]["resources"].append("ingress.yaml"),
        "lists ingress.yaml"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_checks_report_a_broken_manifest(manifests: Manifests, breakage: str) -> None:
    mutate, expected = BREAKAGES[breakage]
    broken = copy.deepcopy(manifests)
    mutate(broken)
    problems = all_problems(broken)
    assert any(expected in p for p in problems), problems
    assert all_problems(manifests) == []  # the shared fixture was not touched


def test_credential_text_is_found(tmp_path: Path) -> None:
    (tmp_path / "leak.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
        f"# KEYSAFE_MASTER_KEY={FAKE_KEY}\n"
        "data:\n  url: postgresql://keysafe:hunter2@db:5432/keysafe\n"
        "  token: ks_" + "a1B2" * 8 + "\n"
        "  doc: postgresql://USER:PASSWORD@HOST:5432/DBNAME\n")
    problems = check_no_credential_text(tmp_path)
    assert [p.split(" looks")[0] for p in problems] == [
        "leak.yaml: line 5", "leak.yaml: line 7", "leak.yaml: line 8"]
