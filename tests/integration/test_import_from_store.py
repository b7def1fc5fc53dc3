"""``keysafe import --from-store``: adopting the layouts specs 002 and 003 set up by hand,
read from real stores (a moto server for AWS Secrets Manager and SSM, an OpenBao dev
server for Vault KV v2) and, where no server can run here, from the GCP and Azure
stand-ins (STAND-INS speaking the documented REST APIs, not the real services).

Each secret is written with the store's own client, as another team's tooling would,
then imported into the embedded store of a fresh KEYSAFE_HOME. The source is never
changed; a canary value never appears in any output.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from aws_fixtures import MotoAws, aws  # noqa: F401 - aws: module fixture
from bao_fixtures import BaoServer, bao  # noqa: F401 - bao: module fixture
from typer.testing import CliRunner

from keysafe import SecretManager, load_settings
from keysafe.cli.app import app
from keysafe.foreign import import_from_store

ORG = "acme"
CANARY = "sk-ant-api03-" + uuid.uuid4().hex + "canaryAA"
OPENAI = "sk-proj-" + "Q1w2E3r4" * 5
OPENROUTER = "sk-or-v1-" + "a1" * 32
DB_URL = "postgresql://app:pw-" + uuid.uuid4().hex[:12] + "@db.internal:5432/app"
JWT = "j" * 40

#: Spec 002's AWS layout: one JSON secret per concern, several keys each.
ARAGORA = {
    "api-keys": {"anthropic": CANARY, "openai": OPENAI, "openrouter": OPENROUTER},
    "database": {"url": DB_URL},
    "auth": {"jwt-secret": JWT},
}
EXPECTED = {"anthropic_api_key": CANARY, "openai_api_key": OPENAI,
            "openrouter_api_key": OPENROUTER, "database_url": DB_URL, "jwt_secret": JWT}


@pytest.fixture
def home(tmp_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KEYSAFE_ACTOR", "tester")
    return tmp_home


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def local() -> SecretManager:
    return SecretManager.from_settings(load_settings())


def values(mgr: SecretManager) -> dict[str, str]:
    return {m.path.rsplit("/", 1)[1]: mgr.get(m.path.rsplit("/", 1)[1], ORG)
            for m in mgr.list(ORG)}


def no_canary(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text


# -- AWS Secrets Manager (moto) -------------------------------------------------------------
@pytest.fixture
def aragora_aws(aws: MotoAws) -> str:  # noqa: F811
    """Spec 002's three secrets under a prefix of their own; their names."""
    sm = aws.client("secretsmanager")
    base = f"aragora-{uuid.uuid4().hex[:8]}/production"
    for name, data in ARAGORA.items():
        sm.create_secret(Name=f"{base}/{name}", SecretString=json.dumps(data))
    return base


def test_spec_002_aws_layout_is_adopted_key_by_key(home: Path, aws: MotoAws,  # noqa: F811
                                                   aragora_aws: str) -> None:
    env = {"AWS_ENDPOINT_URL": aws.url}
    dry = run("import", "--from-store", f"aws-sm:{aragora_aws}/*", "--org", ORG,
              "--dry-run", "--json", env=env)
    assert dry.exit_code == 0, dry.output
    body = json.loads(dry.stdout)
    assert body["counts"]["would_import"] == 5
    assert values(local()) == {}  # a dry run writes nothing

    r = run("import", "--from-store", f"aws-sm:{aragora_aws}/*", "--org", ORG, "--json",
            env=env)
    assert r.exit_code == 0, r.output
    body = json.loads(r.stdout)
    assert body["counts"]["imported"] == 5
    by_var = {i["variable"]: i["name"] for i in body["items"]}
    assert by_var[f"{aragora_aws}/api-keys#anthropic"] == "anthropic_api_key"
    assert by_var[f"{aragora_aws}/database#url"] == "database_url"
    assert by_var[f"{aragora_aws}/auth#jwt-secret"] == "jwt_secret"
    mgr = local()
    assert values(mgr) == EXPECTED
    # Keys that are not variables leave no env_var tag: export gives the catalog's.
    assert mgr.describe("anthropic_api_key", ORG).tags == {}
    # The source is as it was.
    sm = aws.client("secretsmanager")
    got = sm.get_secret_value(SecretId=f"{aragora_aws}/api-keys")
    assert json.loads(got["SecretString"])["anthropic"] == CANARY
    assert len(sm.list_secret_version_ids(SecretId=f"{aragora_aws}/api-keys")["Versions"]) == 1
    # Again: everything exists, so everything is skipped.
    again = run("import", "--from-store", f"aws-sm:{aragora_aws}/*", "--org", ORG, "--json",
                env=env)
    assert json.loads(again.stdout)["counts"]["skipped"] == 5
    records = run("audit", "--json").output
    assert records.count('"action": "write"') >= 5
    no_canary(dry.output, r.output, again.output, records)
    for f in home.rglob("*"):
        if f.is_file():
            assert CANARY.encode() not in f.read_bytes(), f


def test_adopted_into_a_keysafe_server(home: Path, aws: MotoAws,  # noqa: F811
                                       aragora_aws: str) -> None:
    """With KEYSAFE_SERVER_URL set, the secrets read from the other store are written
    through the keysafe server (a real ``keysafe serve`` on loopback), under the token,
    and marked exposed when asked; nothing is stored on this side."""
    import httpx
    from tests.server.serverkit import bearer, real_server

    with real_server(home / "srv") as srv:
        env = {"AWS_ENDPOINT_URL": aws.url, "KEYSAFE_SERVER_URL": srv.url,
               "KEYSAFE_TOKEN": srv.token, "KEYSAFE_HOME": str(home / "client")}
        r = run("import", "--from-store", f"aws-sm:{aragora_aws}/api-keys", "--org", ORG,
                "--exposed", "--json", env=env)
        assert r.exit_code == 0, r.output
        body = json.loads(r.stdout)
        assert body["counts"]["imported"] == 3
        no_canary(r.output)
        with httpx.Client(base_url=srv.url, headers=bearer(srv.token), timeout=30) as c:
            st = c.get(f"/api/secrets/{ORG}/anthropic_api_key").json()
            reader = c.post("/api/tokens", json={"name": "app", "roles": ["service"],
                                                 "orgs": [ORG]}).json()["token"]
        assert st["exposed"] is True
        assert st["created_by"].startswith("token:")
        with httpx.Client(base_url=srv.url, headers=bearer(reader), timeout=30) as c:
            got = c.get(f"/api/secrets/{ORG}/anthropic_api_key/value")
            assert got.json()["value"] == CANARY
    assert not (home / "client").exists()


def test_spec_003_variables_keep_their_names(home: Path, aws: MotoAws) -> None:  # noqa: F811
    """ml-workflow's bundles hold variables: each becomes its catalog secret, and a
    variable the catalog spells otherwise is kept as the env_var tag."""
    sm = aws.client("secretsmanager")
    base = f"ml-workflow-{uuid.uuid4().hex[:8]}/production"
    sm.create_secret(Name=f"{base}/app", SecretString=json.dumps(
        {"SECRET_KEY": "s" * 50, "DATABASE_URL": DB_URL, "REDIS_URL": "redis://host:6379/0"}))
    sm.create_secret(Name=f"{base}/api-keys", SecretString=json.dumps(
        {"OPENAI_API_KEY": OPENAI, "HF_TOKEN": "hf_" + "x" * 34}))
    r = run("import", "--from-store", f"aws-sm:{base}/app", "--from-store",
            f"aws-sm:{base}/api-keys", "--org", ORG, "--json",
            env={"AWS_ENDPOINT_URL": aws.url})
    assert r.exit_code == 0, r.output
    mgr = local()
    got = values(mgr)
    assert set(got) == {"secret_key", "database_url", "redis_url", "openai_api_key",
                        "hf_api_token"}
    assert mgr.describe("hf_api_token", ORG).tags == {"env_var": "HF_TOKEN"}
    assert mgr.describe("openai_api_key", ORG).tags == {}


def test_map_whole_unknown_and_failures(home: Path, aws: MotoAws) -> None:  # noqa: F811
    sm = aws.client("secretsmanager")
    base = f"other-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=f"{base}/billing", SecretString=json.dumps(
        {"stripe": "sk_live_" + "z" * 24, "partner-token": "pt-1234567890"}))
    env = {"AWS_ENDPOINT_URL": aws.url}
    r = run("import", "--from-store", f"aws-sm:{base}/billing", "--org", ORG, "--json",
            env=env)
    assert r.exit_code == 0, r.output
    items = {i["variable"].split("#")[1]: i for i in json.loads(r.stdout)["items"]}
    assert items["stripe"]["status"] == "unknown"
    assert "--map KEY=NAME" in items["stripe"]["reason"]
    r = run("import", "--from-store", f"aws-sm:{base}/billing", "--org", ORG, "--json",
            "--map", "stripe=stripe_secret_key", "--map", "partner-token=partner_token",
            env=env)
    assert r.exit_code == 0, r.output
    assert set(values(local())) == {"stripe_secret_key", "partner_token"}
    # --whole keeps the object as one JSON secret, named by --map on the store name.
    r = run("import", "--from-store", f"aws-sm:{base}/billing", "--org", ORG, "--whole",
            "--map", f"{base}/billing=billing_credentials", "--json", env=env)
    assert r.exit_code == 0, r.output
    assert local().get_json("billing_credentials", ORG)["partner-token"] == "pt-1234567890"
    # A name the store does not have: failed, not found (exit 3), the rest still goes.
    r = run("import", "--from-store", f"aws-sm:{base}/nope", "--org", ORG, env=env)
    assert r.exit_code == 3, r.output
    assert "not found in the aws-sm store" in r.output
    r = run("import", "--from-store", f"aws-sm:{base}-none/*", "--org", ORG, env=env)
    assert r.exit_code == 3
    assert "no secret in the aws-sm store starts with" in r.output


def test_one_unreadable_secret_fails_alone_and_keysafe_s_own_are_left_out(
        home: Path, aws: MotoAws) -> None:  # noqa: F811
    """A binary secret (which keysafe cannot take as text) is a failed row and the rest
    is imported; a listing leaves out what keysafe itself wrote in the same store."""
    from keysafe.backends.aws_sm import AwsSecretsManagerBackend

    sm = aws.client("secretsmanager")
    base = f"mixed-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=f"{base}/blob", SecretBinary=b"\x00\x01")
    sm.create_secret(Name=f"{base}/openai-key", SecretString=OPENAI)
    ours = SecretManager(AwsSecretsManagerBackend(endpoint_url=aws.url),
                         naming=f"{base}/{{app}}/{{env}}/{{org}}/{{domain}}/{{name}}")
    ours.put("anthropic_api_key", CANARY, "other-org")
    r = run("import", "--from-store", f"aws-sm:{base}/*", "--org", ORG, "--json",
            env={"AWS_ENDPOINT_URL": aws.url,
                 "KEYSAFE_NAMING_TEMPLATE": f"{base}/{{app}}/{{env}}/{{org}}/{{domain}}/{{name}}"})
    assert r.exit_code == 9, r.output  # the first failure's code: unsupported
    items = {i["variable"]: i for i in json.loads(r.stdout)["items"]}
    assert set(items) == {f"{base}/blob", f"{base}/openai-key"}
    assert items[f"{base}/blob"]["status"] == "failed"
    assert items[f"{base}/openai-key"]["status"] == "imported"
    no_canary(r.output)


def test_a_bad_org_stops_before_any_read(home: Path) -> None:
    class Source:
        def foreign_names(self, prefix: str) -> list[str]:
            raise AssertionError("listed")

        def read_foreign(self, name: str) -> str:
            raise AssertionError("read")

        def close(self) -> None: ...

    from keysafe.errors import InvalidName

    with pytest.raises(InvalidName):
        import_from_store(local(), Source(), ["a/*", "b"], org="../bad")


# -- SSM Parameter Store (moto): one parameter per variable -------------------------------
def test_ssm_parameters_by_path(home: Path, aws: MotoAws) -> None:  # noqa: F811
    ssm = aws.client("ssm")
    base = f"/ragstar-{uuid.uuid4().hex[:8]}/production"
    ssm.put_parameter(Name=f"{base}/OPENAI_API_KEY", Value=OPENAI, Type="SecureString")
    ssm.put_parameter(Name=f"{base}/anthropic-api-key", Value=CANARY, Type="SecureString")
    r = run("import", "--from-store", f"aws-ssm:{base}/*", "--org", ORG, "--json",
            env={"AWS_ENDPOINT_URL": aws.url})
    assert r.exit_code == 0, r.output
    assert values(local()) == {"openai_api_key": OPENAI, "anthropic_api_key": CANARY}
    no_canary(r.output)


# -- Vault KV v2 (OpenBao) --------------------------------------------------------------------
def test_spec_002_vault_layout(home: Path, bao: BaoServer) -> None:  # noqa: F811
    import hvac

    client = hvac.Client(url=bao.url, token=bao.token)
    base = f"aragora-{uuid.uuid4().hex[:8]}/production"
    for name, data in ARAGORA.items():
        client.secrets.kv.v2.create_or_update_secret(f"{base}/{name}", secret=data,
                                                     mount_point="secret")
    env = {"VAULT_ADDR": bao.url, "VAULT_TOKEN": bao.token}
    r = run("import", "--from-store", f"vault:{base}/*", "--org", ORG, "--json", env=env)
    assert r.exit_code == 0, r.output
    assert values(local()) == EXPECTED
    assert client.secrets.kv.v2.read_secret_version(
        f"{base}/api-keys", mount_point="secret", raise_on_deleted_version=True,
    )["data"]["metadata"]["version"] == 1
    no_canary(r.output)


# -- GCP and Azure (stand-ins): one secret per value, names with a prefix ------------------
def test_gcp_names_with_a_prefix(home: Path) -> None:
    pytest.importorskip("google.cloud.secretmanager_v1")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import secretmanager_v1
    from standins import GcpSecretManagerStandin

    from keysafe.backends.gcp import GcpSecretManagerBackend

    server = GcpSecretManagerStandin().start()
    try:
        plain = secretmanager_v1.SecretManagerServiceClient(
            credentials=AnonymousCredentials(), transport="rest",
            client_options={"api_endpoint": server.url})
        parent = "projects/test-project"
        for sid, value in (("aragora-anthropic-key", CANARY), ("aragora-openai-key", OPENAI),
                           ("aragora-database-url", DB_URL), ("unrelated", "x")):
            plain.create_secret(request={"parent": parent, "secret_id": sid,
                                         "secret": {"replication": {"automatic": {}}}})
            plain.add_secret_version(request={"parent": f"{parent}/secrets/{sid}",
                                              "payload": {"data": value.encode()}})
        source = GcpSecretManagerBackend(project="test-project", endpoint=server.url,
                                         credentials=AnonymousCredentials())
        from keysafe.backends.base import WriteContext

        source.put("aragora-z", "keysafe's own", ctx=WriteContext.make("t"))  # aragora-hz
        assert source.foreign_names("aragora-") == [
            "aragora-anthropic-key", "aragora-database-url", "aragora-openai-key"]
        result = import_from_store(local(), source, ["aragora-*"], org=ORG, store="gcp")
        assert result.ok
        assert result.counts["imported"] == 3
        assert values(local()) == {"anthropic_api_key": CANARY, "openai_api_key": OPENAI,
                                   "database_url": DB_URL}
        no_canary(json.dumps(result.to_dict()))
        source.close()
    finally:
        server.stop()


def test_azure_names_with_a_prefix(home: Path, tmp_path: Path) -> None:
    pytest.importorskip("azure.keyvault.secrets")
    from azure.keyvault.secrets import SecretClient
    from standins import AzureKeyVaultStandin
    from test_azure import backend_for, make_certificate, test_kwargs

    (tmp_path / "tls").mkdir()
    server = AzureKeyVaultStandin(*make_certificate(tmp_path / "tls")).start()
    try:
        source = backend_for(server)
        plain = SecretClient(server.url, source._credential, **test_kwargs(server))
        for name, value in (("aragora-anthropic-key", CANARY), ("aragora-openai-key", OPENAI),
                            ("Other", "x")):
            plain.set_secret(name, value)
        from keysafe.backends.base import WriteContext

        source.put("aragora-z", "keysafe's own", ctx=WriteContext.make("t"))  # aragora-hz
        assert source.foreign_names("ARAGORA-") == ["aragora-anthropic-key",
                                                    "aragora-openai-key"]
        result = import_from_store(local(), source, ["aragora-*"], org=ORG, store="azure")
        assert result.ok, result.to_dict()
        assert values(local()) == {"anthropic_api_key": CANARY, "openai_api_key": OPENAI}
        source.close()
    finally:
        server.stop()


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "code", "words"), [
    (("--from-store", "aws-sm"), 2, "expected STORE:NAME"),
    (("--from-store", "aws-sm:a", "--from-store", "vault:b"), 2, "one store per import"),
    (("--from-store", "sqlite:a/b"), 9, "holds only keysafe's own secrets"),
    (("--from-store", "chain:a/b"), 9, "holds only keysafe's own secrets"),
    (("--from-store", "nosuch:a/b"), 8, "unknown profile 'nosuch'"),
    (("--from-store", "aws-sm:a", "--map", "novalue"), 2, "expected KEY=NAME"),
    (("--from-store", "aws-sm:a", "--map", "k=../x"), 2, "name"),
    (("--map", "a=b", "x.env"), 2, "--map and --whole go with --from-store"),
])
def test_bad_input_is_named_and_changes_nothing(home: Path, args: tuple[str, ...], code: int,
                                                words: str) -> None:
    (Path.cwd() / "x.env").write_text("OPENAI_API_KEY=" + OPENAI + "\n")
    r = run("import", *args, "--org", ORG)
    assert r.exit_code == code, r.output
    assert words in r.output
    assert values(local()) == {}


def test_a_store_of_keysafe_s_own_is_refused(home: Path) -> None:
    (Path.cwd() / "keysafe.toml").write_text(
        '[keysafe.profiles.old]\nbackend = "sqlite"\n')
    r = run("import", "--from-store", "old:a/b", "--org", ORG)
    assert r.exit_code == 9
    assert "holds only keysafe's own secrets" in r.output
