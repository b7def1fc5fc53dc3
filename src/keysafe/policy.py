"""Least-privilege access policies for the configured naming prefix, as the specs write
them by hand (spec 000's and 001's IAM JSON, spec 002's role bindings), generated for
each cloud store keysafe speaks to: IAM JSON for AWS Secrets Manager and SSM Parameter
Store, HCL for Vault/OpenBao, role bindings with an IAM condition for GCP Secret
Manager, and a role assignment for Azure Key Vault.

Pure functions: a prefix and options in, a ``Policy`` out. The actions are those
keysafe's own backends call (docs/backends/*.md); read-only policies hold no action
that changes anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keysafe.errors import ConfigError, InvalidValue
from keysafe.naming import NamingTemplate, validate_segment

if TYPE_CHECKING:
    from keysafe.config import Settings

__all__ = [
    "BACKENDS",
    "Policy",
    "aws_parameter_store",
    "aws_secrets_manager",
    "azure_key_vault",
    "build",
    "for_settings",
    "gcp_secret_manager",
    "scope_prefix",
    "vault",
]

BACKENDS: tuple[str, ...] = ("aws-sm", "aws-ssm", "vault", "gcp", "azure")


@dataclass(frozen=True)
class Policy:
    """A policy document for one store. ``document`` is a dict (JSON) or HCL text;
    ``notes`` say what it cannot express and what to fill in."""

    backend: str
    kind: str
    language: str  # "json" or "hcl": how to show it
    prefix: str
    read_only: bool
    document: dict[str, Any] | str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def text(self) -> str:
        if isinstance(self.document, str):
            return self.document
        return json.dumps(self.document, indent=2) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "kind": self.kind, "format": self.language,
                "prefix": self.prefix, "read_only": self.read_only,
                "document": self.document, "notes": list(self.notes)}


def scope_prefix(template: str, *, app: str, env: str, org: str | None = None,
                 domain: str | None = None) -> str:
    """The path prefix every secret of the scope shares (``agentfoundry/dev/acme-corp/``;
    ``/ragstar/local/org-`` for all orgs of spec 000's template). Raises InvalidName
    for a bad segment."""
    for kind, value in (("app", app), ("env", env), ("org", org), ("domain", domain)):
        if value is not None:
            validate_segment(kind, value)
    if domain is not None and org is None:
        raise ConfigError("a policy for a domain needs its org too")
    return NamingTemplate(template).prefix(app=app, env=env, org=org, domain=domain)


# -- AWS ------------------------------------------------------------------------------------
_SM_READ = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret",
            "secretsmanager:ListSecretVersionIds"]
_SM_WRITE = ["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue",
             "secretsmanager:UpdateSecret", "secretsmanager:UpdateSecretVersionStage",
             "secretsmanager:DeleteSecret", "secretsmanager:RestoreSecret",
             "secretsmanager:TagResource", "secretsmanager:UntagResource"]
_SSM_READ = ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParameterHistory",
             "ssm:ListTagsForResource"]
_SSM_WRITE = ["ssm:PutParameter", "ssm:DeleteParameter", "ssm:AddTagsToResource",
              "ssm:RemoveTagsFromResource"]


def _kms_statement(kms_key: str, *, read_only: bool, service: str) -> dict[str, Any]:
    actions = ["kms:Decrypt"] if read_only else ["kms:Decrypt", "kms:Encrypt",
                                                 "kms:GenerateDataKey"]
    condition: dict[str, Any] = {"StringLike": {"kms:ViaService": f"{service}.*.amazonaws.com"}}
    if kms_key.startswith("arn:aws:kms:") and ":key/" in kms_key:
        resource = kms_key
    elif kms_key.startswith("arn:aws:kms:") or kms_key.startswith("alias/"):
        # IAM matches a key, never an alias, by resource: name the alias in a condition.
        alias = kms_key[kms_key.index("alias/"):] if "alias/" in kms_key else kms_key
        resource = "*"
        condition["ForAnyValue:StringEquals"] = {"kms:ResourceAliases": alias}
    else:
        resource = f"arn:aws:kms:*:*:key/{kms_key}"
    return {"Sid": "KeysafeKmsKey", "Effect": "Allow", "Action": actions,
            "Resource": resource, "Condition": condition}


def _kms_note(kms_key: str | None, store: str) -> str:
    if kms_key:
        return (f"The KMS statement lets {store} use the customer-managed key on this "
                "principal's behalf only (kms:ViaService).")
    return (f"With a customer-managed KMS key, readers also need kms:Decrypt and writers "
            f"kms:Encrypt and kms:GenerateDataKey on it (pass --kms-key to add them); "
            f"{store}'s AWS-managed key needs nothing more.")


def aws_secrets_manager(prefix: str, *, read_only: bool = False,
                        kms_key: str | None = None) -> Policy:
    """IAM policy for keysafe's AWS Secrets Manager backend on names under ``prefix``."""
    resource = f"arn:aws:secretsmanager:*:*:secret:{prefix}*"
    actions = _SM_READ if read_only else _SM_READ + _SM_WRITE
    statements: list[dict[str, Any]] = [
        {"Sid": "KeysafeSecrets", "Effect": "Allow", "Action": sorted(actions),
         "Resource": resource},
        # ListSecrets cannot be limited to a resource; keysafe narrows it by name.
        {"Sid": "KeysafeList", "Effect": "Allow", "Action": "secretsmanager:ListSecrets",
         "Resource": "*"},
    ]
    if kms_key:
        statements.append(_kms_statement(kms_key, read_only=read_only,
                                         service="secretsmanager"))
    notes = (
        "secretsmanager:ListSecrets cannot be scoped to a name prefix: it shows the names "
        "(never the values) of every secret in the account and region. Drop the "
        "KeysafeList statement if the principal never lists secrets.",
        "The secret ARN ends in a random suffix (-AbCdEf), which the trailing * covers.",
        _kms_note(kms_key, "Secrets Manager"),
    )
    return Policy("aws-sm", "aws-iam-policy", "json", prefix, read_only,
                  {"Version": "2012-10-17", "Statement": statements}, notes)


def aws_parameter_store(prefix: str, *, read_only: bool = False,
                        kms_key: str | None = None) -> Policy:
    """IAM policy for keysafe's SSM Parameter Store backend on parameters under
    ``prefix`` (hierarchical names begin with ``/``; the ARN holds the name without it)."""
    name = prefix.lstrip("/")
    resource = f"arn:aws:ssm:*:*:parameter/{name}*"
    actions = _SSM_READ if read_only else _SSM_READ + _SSM_WRITE
    statements: list[dict[str, Any]] = [
        {"Sid": "KeysafeParameters", "Effect": "Allow", "Action": sorted(actions),
         "Resource": resource},
    ]
    if name.endswith("/") and name.strip("/"):
        # GetParametersByPath names the path itself, which the trailing * does not cover.
        statements.append({"Sid": "KeysafeParametersByPath", "Effect": "Allow",
                           "Action": "ssm:GetParametersByPath",
                           "Resource": [f"arn:aws:ssm:*:*:parameter/{name.rstrip('/')}",
                                        resource]})
    else:
        statements[0]["Action"] = sorted([*actions, "ssm:GetParametersByPath"])
    statements.append({"Sid": "KeysafeDescribe", "Effect": "Allow",
                       "Action": "ssm:DescribeParameters", "Resource": "*"})
    if kms_key:
        statements.append(_kms_statement(kms_key, read_only=read_only, service="ssm"))
    notes = (
        "ssm:DescribeParameters cannot be scoped to a path: keysafe calls it for describe, "
        "list, check-and-set and every put, and it shows the names (never the values) of "
        "every parameter in the account and region.",
        "GetParameters and GetParametersByPath are for other readers of the same "
        "parameters (the application, the External Secrets Operator); keysafe itself "
        "reads with GetParameter.",
        _kms_note(kms_key, "Parameter Store"),
    )
    return Policy("aws-ssm", "aws-iam-policy", "json", prefix, read_only,
                  {"Version": "2012-10-17", "Statement": statements}, notes)


# -- Vault ----------------------------------------------------------------------------------
def vault(prefix: str, *, read_only: bool = False, mount: str = "secret") -> Policy:
    """Vault/OpenBao HCL policy for keysafe's KV v2 backend on paths under ``prefix`` in
    ``mount`` (a leading '/' of the keysafe path is not part of the Vault path)."""
    kv = prefix.lstrip("/")
    mount = mount.strip("/")
    if not mount or not mount.isprintable() or any(c in mount for c in '"*+#{}'):
        # The mount goes into HCL: a quote or a newline could add a rule of its own.
        raise InvalidValue(f"Vault mount {json.dumps(mount)[:80]} is not a mount path: "
                          "printable characters without quotes, globs or braces")
    if read_only:
        stanzas = [("data", ["read"]), ("metadata", ["read", "list"])]
    else:
        stanzas = [("data", ["create", "read", "update", "delete"]),
                   ("metadata", ["create", "read", "update", "patch", "delete", "list"]),
                   ("delete", ["update"]), ("undelete", ["update"]), ("destroy", ["update"])]
    what = "read" if read_only else "manage"
    # JSON-quoted: a comment line holds no newline however the names are spelt.
    lines = [f"# keysafe: {what} secrets under {json.dumps(prefix or '(everything)')} in "
             f"the KV v2 mount {json.dumps(mount)}"]
    for sub, caps in stanzas:
        lines.append(_hcl_path(f"{mount}/{sub}/{kv}*", caps))
    folder = kv[: kv.rfind("/") + 1]
    if folder != kv:
        # keysafe lists from the prefix's folder, which the glob above does not match.
        lines.append(_hcl_path(f"{mount}/metadata/{folder}", ["list"]))
    notes = [
        "A service that only reads current values needs just the data path; reading an "
        "older version, describe and list need the metadata path.",
        "keysafe also asks sys/internal/ui/mounts which KV version the mount runs; a token "
        "that may not ask is not an error.",
    ]
    if folder != kv:
        notes.append(f"The list-only stanza on {mount}/metadata/{folder} shows the names of "
                     "everything in that folder, other orgs' included (names only).")
    return Policy("vault", "vault-policy", "hcl", prefix, read_only, "\n".join(lines) + "\n",
                  tuple(notes))


def _hcl_path(path: str, caps: list[str]) -> str:
    quoted = ", ".join(json.dumps(c) for c in caps)
    return f"path {json.dumps(path)} {{\n  capabilities = [{quoted}]\n}}"


# -- GCP ------------------------------------------------------------------------------------
_GCP_WRITER_PERMISSIONS = [
    "secretmanager.secrets.get", "secretmanager.secrets.update",
    "secretmanager.secrets.delete", "secretmanager.versions.add",
    "secretmanager.versions.access", "secretmanager.versions.list",
    "secretmanager.versions.get", "secretmanager.versions.enable",
    "secretmanager.versions.disable", "secretmanager.versions.destroy",
]
#: Checked on the project, where a condition on the secret's name does not apply.
_GCP_PROJECT_PERMISSIONS = ["secretmanager.secrets.create", "secretmanager.secrets.list"]


def gcp_secret_manager(prefix: str, *, read_only: bool = False,
                       project: str = "PROJECT_NUMBER",
                       member: str = "serviceAccount:SERVICE_ACCOUNT_EMAIL") -> Policy:
    """IAM policy bindings (policy version 3, for conditions) for keysafe's GCP Secret
    Manager backend, limited by an IAM condition to the secret ids that encode paths
    under ``prefix``."""
    from keysafe.backends._names import GCP

    encoded = GCP.encode_prefix(prefix)
    expression = f'resource.name.startsWith("projects/{project}/secrets/{encoded}")'
    condition = {"title": f"keysafe {prefix}"[:100],
                 "description": f"secrets whose keysafe path starts with {prefix}",
                 "expression": expression}
    doc: dict[str, Any] = {"version": 3, "bindings": []}
    if read_only:
        doc["bindings"] = [
            {"role": "roles/secretmanager.secretAccessor", "members": [member],
             "condition": condition},
            {"role": "roles/secretmanager.viewer", "members": [member],
             "condition": condition},
        ]
    else:
        doc["customRoles"] = [
            {"roleId": "keysafeSecretWriter", "title": "keysafe secret writer",
             "includedPermissions": _GCP_WRITER_PERMISSIONS, "stage": "GA"},
            {"roleId": "keysafeSecretCreator", "title": "keysafe secret creator",
             "includedPermissions": _GCP_PROJECT_PERMISSIONS, "stage": "GA"},
        ]
        doc["bindings"] = [
            {"role": f"projects/{project}/roles/keysafeSecretWriter", "members": [member],
             "condition": condition},
            {"role": f"projects/{project}/roles/keysafeSecretCreator", "members": [member]},
        ]
    notes = [
        f"Secret ids encode keysafe paths (docs/backends/gcp.md): {prefix or '(all)'} "
        f"becomes the id prefix {encoded or '(any)'}, so one condition covers the scope.",
        "IAM conditions name secrets by project number (projects/123456789012/secrets/...), "
        "not project id: pass --project with the number "
        "(gcloud projects describe ID --format='value(projectNumber)').",
        "secretmanager.secrets.list (and .create) are checked on the project, where a "
        "condition on the secret's name does not apply. "
        + ("list shows the names (never the values) of every secret in the project: grant "
           "roles/secretmanager.viewer without the condition only if the service lists."
           if read_only else
           "keysafeSecretCreator is bound without a condition: it creates and lists secrets "
           "by name, and reads or changes none."),
        "Grant with: gcloud projects add-iam-policy-binding PROJECT --member=MEMBER "
        "--role=ROLE --condition='expression=...,title=...' (one call per binding).",
    ]
    return Policy("gcp", "gcp-iam-bindings", "json", prefix, read_only, doc, tuple(notes))


# -- Azure ----------------------------------------------------------------------------------
def azure_key_vault(prefix: str, *, read_only: bool = False, vault_name: str = "VAULT_NAME",
                    principal: str = "PRINCIPAL_ID") -> Policy:
    """Azure RBAC role assignment for keysafe's Key Vault backend. Azure cannot limit a
    role to names with a prefix, so the scope is the vault."""
    from keysafe.backends._names import AZURE

    scope = ("/subscriptions/SUBSCRIPTION_ID/resourceGroups/RESOURCE_GROUP/providers/"
             f"Microsoft.KeyVault/vaults/{vault_name}")
    role = "Key Vault Secrets User" if read_only else "Key Vault Secrets Officer"
    encoded = AZURE.encode_prefix(prefix)
    doc = {"roleAssignments": [{"roleDefinitionName": role, "principalId": principal,
                                "scope": scope}],
           "secretNamePrefix": encoded}
    notes = (
        "Azure RBAC cannot scope a role to secret names with a prefix: this assignment "
        "covers every secret in the vault. For tenant isolation give each org its own "
        "vault, or assign per secret (scope .../vaults/VAULT/secrets/NAME).",
        f"keysafe's secrets for this scope are the names starting with {encoded or '(any)'} "
        "(docs/backends/azure.md).",
        ("Key Vault Secrets User reads values and metadata (get, describe, list); a "
         "principal that should see names but no values gets Key Vault Reader instead."
         if read_only else
         "Key Vault Secrets Officer reads and writes every secret in the vault, values "
         "included; there is no write-only built-in role."),
        "The vault must use the Azure RBAC permission model. With access policies instead: "
        + ("get and list." if read_only else "get, list, set, delete, recover and purge."),
        f'Assign with: az role assignment create --role "{role}" --assignee PRINCIPAL_ID '
        f"--scope {scope}",
    )
    return Policy("azure", "azure-role-assignment", "json", prefix, read_only, doc, notes)


# -- dispatch -------------------------------------------------------------------------------
_BUILDERS: dict[str, Callable[..., Policy]] = {
    "aws-sm": aws_secrets_manager,
    "aws-ssm": aws_parameter_store,
    "vault": vault,
    "gcp": gcp_secret_manager,
    "azure": azure_key_vault,
}
_OPTIONS: dict[str, frozenset[str]] = {
    "aws-sm": frozenset({"kms_key"}),
    "aws-ssm": frozenset({"kms_key"}),
    "vault": frozenset({"mount"}),
    "gcp": frozenset({"project", "member"}),
    "azure": frozenset({"vault_name", "principal"}),
}


def build(backend: str, prefix: str, *, read_only: bool = False, **options: Any) -> Policy:
    """The policy for ``backend`` (one of BACKENDS). Options that do not apply to it, or
    are None, are ignored. Raises ConfigError for an unknown backend."""
    builder = _BUILDERS.get(backend)
    if builder is None:
        raise ConfigError(f"no policy for backend {backend!r}; choose one of "
                          f"{', '.join(BACKENDS)}")
    kw = {k: v for k, v in options.items() if k in _OPTIONS[backend] and v is not None}
    return builder(prefix, read_only=read_only, **kw)


def for_settings(settings: Settings, backend: str, *, read_only: bool = False,
                 org: str | None = None, domain: str | None = None,
                 **options: Any) -> Policy:
    """The policy for the configured app, environment and naming template. Options the
    caller leaves out come from the profile when it uses the same backend (Vault's
    mount, the AWS KMS key, Azure's vault, a numeric GCP project)."""
    prefix = scope_prefix(settings.naming_template, app=settings.app, env=settings.env,
                          org=org, domain=domain)
    merged = dict(_from_profile(settings, backend))
    merged.update({k: v for k, v in options.items() if v is not None})
    return build(backend, prefix, read_only=read_only, **merged)


def _from_profile(settings: Settings, backend: str) -> dict[str, Any]:
    if settings.backend != backend:
        return {}
    opts = settings.backend_options
    out: dict[str, Any] = {}
    if backend in ("aws-sm", "aws-ssm") and opts.get("kms_key_id"):
        out["kms_key"] = str(opts["kms_key_id"])
    elif backend == "vault" and opts.get("mount"):
        out["mount"] = str(opts["mount"])
    elif backend == "gcp" and str(opts.get("project", "")).isdigit():
        out["project"] = str(opts["project"])
    elif backend == "azure" and opts.get("vault_url"):
        from urllib.parse import urlparse

        host = urlparse(str(opts["vault_url"])).hostname or ""
        if host:
            out["vault_name"] = host.split(".")[0]
    return out
