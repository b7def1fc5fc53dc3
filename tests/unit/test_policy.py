"""Generated least-privilege policies (keysafe.policy) for spec 000's and spec 001's
naming templates: the documents parse, their resources match exactly the configured
prefix, and read-only variants hold no action that changes anything."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest

from keysafe import ConfigError, InvalidName, InvalidValue, load_settings
from keysafe.backends._names import AZURE, GCP
from keysafe.naming import NamingTemplate, SecretRef
from keysafe.policy import (
    BACKENDS,
    aws_parameter_store,
    aws_secrets_manager,
    azure_key_vault,
    build,
    for_settings,
    gcp_secret_manager,
    scope_prefix,
    vault,
)

SPEC_000 = "/{app}/{env}/org-{org}/{domain}/{name}"  # ragstar, SSM
SPEC_001 = "{app}/{env}/{org}/{domain}/{name}"  # agentfoundry, Secrets Manager

# What the specs wrote by hand: keysafe's policies must allow at least these.
SPEC_000_ACTIONS = {"ssm:GetParameter", "ssm:PutParameter", "ssm:DeleteParameter"}
SPEC_001_ACTIONS = {"secretsmanager:CreateSecret", "secretsmanager:GetSecretValue",
                    "secretsmanager:PutSecretValue", "secretsmanager:DescribeSecret",
                    "secretsmanager:DeleteSecret", "secretsmanager:ListSecrets"}
WRITE_VERBS = ("Create", "Put", "Delete", "Update", "Restore", "Tag", "Untag", "Add",
               "Remove", "Encrypt", "GenerateDataKey", "Label")


def statements(doc: Any) -> list[dict[str, Any]]:
    data = json.loads(doc.text())  # the rendered text is valid JSON
    assert data["Version"] == "2012-10-17"
    return list(data["Statement"])


def actions(stmt: dict[str, Any]) -> list[str]:
    a = stmt["Action"]
    return [a] if isinstance(a, str) else list(a)


def resources(stmt: dict[str, Any]) -> list[str]:
    r = stmt["Resource"]
    return [r] if isinstance(r, str) else list(r)


def all_actions(doc: Any) -> set[str]:
    return {a for s in statements(doc) for a in actions(s)}


def is_write(action: str) -> bool:
    verb = action.split(":", 1)[1]
    return verb.startswith(WRITE_VERBS)


def path_of(template: str, *, app: str, env: str, org: str, domain: str, name: str) -> str:
    return NamingTemplate(template).format(SecretRef(name, org, domain, env, app))


# -- prefixes --------------------------------------------------------------------------------
def test_scope_prefix_for_both_templates():
    assert scope_prefix(SPEC_001, app="agentfoundry", env="dev",
                        org="acme-corp") == "agentfoundry/dev/acme-corp/"
    assert scope_prefix(SPEC_001, app="agentfoundry", env="dev") == "agentfoundry/dev/"
    assert scope_prefix(SPEC_000, app="ragstar", env="local",
                        org="123") == "/ragstar/local/org-123/"
    assert scope_prefix(SPEC_000, app="ragstar", env="local") == "/ragstar/local/org-"
    assert scope_prefix(SPEC_001, app="agentfoundry", env="dev", org="acme-corp",
                        domain="card-services") == "agentfoundry/dev/acme-corp/card-services/"
    with pytest.raises(InvalidName):
        scope_prefix(SPEC_001, app="agentfoundry", env="dev", org="../etc")
    with pytest.raises(ConfigError):
        scope_prefix(SPEC_001, app="a", env="dev", domain="x")


# -- AWS Secrets Manager (spec 001) -----------------------------------------------------------
def test_secrets_manager_policy_for_spec_001():
    prefix = scope_prefix(SPEC_001, app="agentfoundry", env="dev", org="acme-corp")
    doc = aws_secrets_manager(prefix)
    stmts = statements(doc)
    assert all_actions(doc) >= SPEC_001_ACTIONS
    # Everything keysafe's backend calls (docs/backends/aws.md).
    assert {"secretsmanager:UpdateSecretVersionStage", "secretsmanager:RestoreSecret",
            "secretsmanager:UpdateSecret", "secretsmanager:TagResource",
            "secretsmanager:UntagResource",
            "secretsmanager:ListSecretVersionIds"} <= all_actions(doc)
    scoped = [s for s in stmts if resources(s) != ["*"]]
    assert [resources(s) for s in scoped] == [
        ["arn:aws:secretsmanager:*:*:secret:agentfoundry/dev/acme-corp/*"]]
    # Only ListSecrets, which IAM cannot scope, is on "*".
    assert {a for s in stmts if resources(s) == ["*"] for a in actions(s)} == {
        "secretsmanager:ListSecrets"}
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
    mine = path_of(SPEC_001, app="agentfoundry", env="dev", org="acme-corp",
                   domain="card-services", name="openai_api_key")
    theirs = path_of(SPEC_001, app="agentfoundry", env="dev", org="acme-corp2",
                     domain="shared", name="openai_api_key")
    pattern = resources(scoped[0])[0].replace(":*:*:", ":us-east-1:123456789012:")
    assert fnmatch.fnmatchcase(arn + mine + "-AbCdEf", pattern)
    assert not fnmatch.fnmatchcase(arn + theirs + "-AbCdEf", pattern)


def test_secrets_manager_read_only_holds_no_write_action():
    doc = aws_secrets_manager("agentfoundry/dev/", read_only=True)
    acts = all_actions(doc)
    assert acts == {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret",
                    "secretsmanager:ListSecretVersionIds", "secretsmanager:ListSecrets"}
    assert not any(is_write(a) for a in acts)
    assert doc.read_only


def test_kms_statements():
    arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    by_arn = [s for s in statements(aws_secrets_manager("a/", kms_key=arn))
              if s["Sid"] == "KeysafeKmsKey"]
    assert by_arn[0]["Resource"] == arn
    assert set(by_arn[0]["Action"]) == {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"}
    assert by_arn[0]["Condition"]["StringLike"]["kms:ViaService"] == (
        "secretsmanager.*.amazonaws.com")
    alias = next(s for s in statements(aws_parameter_store("/r/", read_only=True,
                                                       kms_key="alias/ragstar"))
             if s["Sid"] == "KeysafeKmsKey")
    assert alias["Action"] == ["kms:Decrypt"]
    assert alias["Resource"] == "*"
    assert alias["Condition"]["ForAnyValue:StringEquals"] == {
        "kms:ResourceAliases": "alias/ragstar"}
    key_id = next(s for s in statements(aws_parameter_store("/r/", kms_key="1234abcd"))
              if s["Sid"] == "KeysafeKmsKey")
    assert key_id["Resource"] == "arn:aws:kms:*:*:key/1234abcd"
    assert not any(s["Sid"] == "KeysafeKmsKey" for s in statements(aws_parameter_store("/r/")))


# -- SSM Parameter Store (spec 000) -----------------------------------------------------------
def test_parameter_store_policy_for_spec_000():
    prefix = scope_prefix(SPEC_000, app="ragstar", env="local", org="123")
    doc = aws_parameter_store(prefix)
    assert all_actions(doc) >= SPEC_000_ACTIONS
    assert {"ssm:GetParameters", "ssm:GetParametersByPath", "ssm:DescribeParameters",
            "ssm:GetParameterHistory", "ssm:AddTagsToResource",
            "ssm:RemoveTagsFromResource", "ssm:ListTagsForResource"} <= all_actions(doc)
    stmts = statements(doc)
    main = stmts[0]
    assert resources(main) == ["arn:aws:ssm:*:*:parameter/ragstar/local/org-123/*"]
    by_path = next(s for s in stmts if actions(s) == ["ssm:GetParametersByPath"])
    assert resources(by_path) == ["arn:aws:ssm:*:*:parameter/ragstar/local/org-123",
                                  "arn:aws:ssm:*:*:parameter/ragstar/local/org-123/*"]
    assert {a for s in stmts if resources(s) == ["*"] for a in actions(s)} == {
        "ssm:DescribeParameters"}
    mine = path_of(SPEC_000, app="ragstar", env="local", org="123", domain="llm",
                   name="openai-api-key")
    assert fnmatch.fnmatchcase("arn:aws:ssm:*:*:parameter" + mine, resources(main)[0])
    other = path_of(SPEC_000, app="ragstar", env="local", org="1234", domain="llm",
                    name="openai-api-key")
    assert not fnmatch.fnmatchcase("arn:aws:ssm:*:*:parameter" + other, resources(main)[0])


def test_parameter_store_for_every_org_and_read_only():
    prefix = scope_prefix(SPEC_000, app="ragstar", env="production")
    doc = aws_parameter_store(prefix, read_only=True)
    stmts = statements(doc)
    assert resources(stmts[0]) == ["arn:aws:ssm:*:*:parameter/ragstar/production/org-*"]
    acts = all_actions(doc)
    assert "ssm:GetParameter" in acts
    assert "ssm:GetParametersByPath" in actions(stmts[0])
    assert not any(is_write(a) for a in acts), acts


# -- Vault ------------------------------------------------------------------------------------
def hcl_paths(text: str) -> dict[str, set[str]]:
    found = re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]\s*\}', text)
    assert len(found) == text.count("path ")
    return {p: {c.strip().strip('"') for c in caps.split(",")} for p, caps in found}


def test_vault_policy_paths():
    prefix = scope_prefix(SPEC_001, app="agentfoundry", env="dev", org="acme-corp")
    doc = vault(prefix)
    assert doc.language == "hcl"
    paths = hcl_paths(doc.text())
    p = "agentfoundry/dev/acme-corp/*"
    assert paths == {
        f"secret/data/{p}": {"create", "read", "update", "delete"},
        f"secret/metadata/{p}": {"create", "read", "update", "patch", "delete", "list"},
        f"secret/delete/{p}": {"update"},
        f"secret/undelete/{p}": {"update"},
        f"secret/destroy/{p}": {"update"},
    }


def test_vault_read_only_and_spec_000_prefix_and_mount():
    prefix = scope_prefix(SPEC_000, app="ragstar", env="local")
    doc = vault(prefix, read_only=True, mount="/kv/")
    paths = hcl_paths(doc.text())
    # The leading '/' of the keysafe path is not part of the Vault path; listing starts
    # at the prefix's folder, which the glob does not match.
    assert paths == {"kv/data/ragstar/local/org-*": {"read"},
                     "kv/metadata/ragstar/local/org-*": {"read", "list"},
                     "kv/metadata/ragstar/local/": {"list"}}
    assert all(caps <= {"read", "list"} for caps in paths.values())


@pytest.mark.parametrize("mount", ['kv"\npath "*" { capabilities = ["sudo"] }\n#',
                                   "kv\nx", 'k"v', "kv/*", "", "/"])
def test_a_mount_that_could_add_a_rule_is_refused(mount: str) -> None:
    """The mount goes into HCL: a quote or newline in it could add a stanza of its own
    (a reviewer found the header comment unescaped)."""
    with pytest.raises(InvalidValue, match="is not a mount path"):
        vault("keysafe/local/acme/", mount=mount)


def test_the_header_comment_is_one_line() -> None:
    text = vault("keysafe/local/acme/", mount="team kv").text()
    assert text.splitlines()[0] == ('# keysafe: manage secrets under "keysafe/local/acme/" '
                                    'in the KV v2 mount "team kv"')
    assert set(hcl_paths(text)) >= {"team kv/data/keysafe/local/acme/*"}


# -- GCP --------------------------------------------------------------------------------------
def test_gcp_bindings_use_the_encoded_prefix():
    prefix = scope_prefix(SPEC_001, app="agentfoundry", env="dev", org="acme-corp")
    doc = gcp_secret_manager(prefix, read_only=True, project="123456789012",
                             member="serviceAccount:app@p.iam.gserviceaccount.com")
    data = json.loads(doc.text())
    assert data["version"] == 3
    roles = {b["role"] for b in data["bindings"]}
    assert roles == {"roles/secretmanager.secretAccessor", "roles/secretmanager.viewer"}
    encoded = GCP.encode_prefix(prefix)
    assert encoded == "agentfoundry--dev--acme-hcorp--"
    for b in data["bindings"]:
        assert b["members"] == ["serviceAccount:app@p.iam.gserviceaccount.com"]
        assert b["condition"]["expression"] == (
            f'resource.name.startsWith("projects/123456789012/secrets/{encoded}")')
    assert "customRoles" not in data
    secret_id = GCP.encode(path_of(SPEC_001, app="agentfoundry", env="dev", org="acme-corp",
                                   domain="card-services", name="openai_api_key"))
    assert secret_id.startswith(encoded)


def test_gcp_writer_roles():
    data = json.loads(gcp_secret_manager("agentfoundry/dev/").text())
    perms = {r["roleId"]: set(r["includedPermissions"]) for r in data["customRoles"]}
    assert "secretmanager.versions.add" in perms["keysafeSecretWriter"]
    assert "secretmanager.versions.destroy" in perms["keysafeSecretWriter"]
    assert perms["keysafeSecretCreator"] == {"secretmanager.secrets.create",
                                             "secretmanager.secrets.list"}
    # Nothing that reads a value or changes one is granted without the name condition.
    unconditioned = [b for b in data["bindings"] if "condition" not in b]
    assert [b["role"] for b in unconditioned] == [
        "projects/PROJECT_NUMBER/roles/keysafeSecretCreator"]


# -- Azure ------------------------------------------------------------------------------------
def test_azure_role_assignment():
    prefix = scope_prefix(SPEC_001, app="agentfoundry", env="dev", org="acme-corp")
    ro = json.loads(azure_key_vault(prefix, read_only=True, vault_name="acme-prod").text())
    rw = json.loads(azure_key_vault(prefix).text())
    assert ro["roleAssignments"][0]["roleDefinitionName"] == "Key Vault Secrets User"
    assert rw["roleAssignments"][0]["roleDefinitionName"] == "Key Vault Secrets Officer"
    assert ro["roleAssignments"][0]["scope"].endswith(
        "/providers/Microsoft.KeyVault/vaults/acme-prod")
    assert ro["secretNamePrefix"] == AZURE.encode_prefix(prefix)
    assert any("cannot scope" in n for n in azure_key_vault(prefix).notes)


# -- dispatch and settings --------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("read_only", [False, True])
def test_every_backend_renders_and_serialises(backend: str, read_only: bool):
    doc = build(backend, "agentfoundry/dev/acme-corp/", read_only=read_only,
                mount=None, kms_key=None)
    assert doc.backend == backend
    assert doc.text().endswith("\n")
    out = json.loads(json.dumps(doc.to_dict()))
    assert out["prefix"] == "agentfoundry/dev/acme-corp/"
    assert out["read_only"] is read_only
    assert out["notes"]
    if doc.language == "json":
        assert json.loads(doc.text()) == out["document"]


def test_unknown_backend():
    with pytest.raises(ConfigError, match="choose one of"):
        build("sqlite", "x/")


def test_for_settings_uses_the_profile(tmp_home: Path):
    (Path.cwd() / "keysafe.toml").write_text(
        '[keysafe]\napp = "ragstar"\nnaming_template = "/{app}/{env}/org-{org}/{domain}/{name}"'
        '\n\n[keysafe.profiles.production]\nbackend = "vault"\nmount = "kv"\n')
    settings = load_settings(env="production")
    doc = for_settings(settings, "vault", org="123")
    assert doc.prefix == "/ragstar/production/org-123/"
    assert "kv/data/ragstar/production/org-123/*" in hcl_paths(doc.text())
    # An explicit option beats the profile; other backends ignore the profile.
    assert "secret/data/ragstar/production/org-123/*" in hcl_paths(
        for_settings(settings, "vault", org="123", mount="secret").text())
    sm = for_settings(settings, "aws-sm", read_only=True)
    assert resources(statements(sm)[0]) == [
        "arn:aws:secretsmanager:*:*:secret:/ragstar/production/org-*"]
