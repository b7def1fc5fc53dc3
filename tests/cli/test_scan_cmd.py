"""``keysafe scan``: exit codes, table/JSON/SARIF output, baseline, allow comments,
``--import`` (stores the value, rewrites the file, never prints it) and the pre-commit
hook definition."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.cli.conftest import Ks

ROOT = Path(__file__).resolve().parents[2]
CANARY = "sk-proj-" + "Q7vX2mK9pL4rT8wZ3nB6cF1hJ5dG0sY2aE7uR4iO9"
GH = "ghp_" + "Zk3qR8vT2mW9xY4pL7nB5cD1fG6hJ0sA1eU2"


@pytest.fixture
def project(home: Path) -> Path:
    """The working directory (``home`` chdirs into tmp/work) with two secrets."""
    work = Path.cwd()
    (work / ".env").write_text(f"DEBUG=1\nOPENAI_API_KEY={CANARY}\n")
    (work / "app.py").write_text(f'import os\nGITHUB_TOKEN = "{GH}"\nNAME = "app"\n')
    return work


def no_canary(*texts: str) -> None:
    for t in texts:
        assert CANARY not in t
        assert CANARY[8:20] not in t
        assert GH[4:16] not in t


def test_findings_exit_1_masked_table(kc: Ks, project: Path) -> None:
    r = kc("scan")
    assert r.code == 1, r.err
    assert ".env:2:16" in r.out
    assert "app.py:2:17" in r.out
    assert "sk-p…(49 chars)" in r.out
    no_canary(r.out, r.err)


def test_clean_tree_exit_0(kc: Ks, home: Path) -> None:
    (Path.cwd() / "ok.py").write_text("x = 1\n")
    r = kc("scan", ".")
    assert r.code == 0, r.err
    assert "no secrets found in 1 file(s)" in r.err


def test_missing_path_is_a_usage_error(kc: Ks, home: Path) -> None:
    r = kc("scan", "does-not-exist", "--json")
    assert r.code == 2
    assert json.loads(r.err)["message"] == "does-not-exist: no such file or directory"


def test_conflicting_options_are_usage_errors(kc: Ks, project: Path) -> None:
    assert kc("scan", "--git-history", "--staged").code == 2
    assert kc("scan", "--update-baseline").code == 2
    assert kc("scan", "--import").code == 2  # no --org
    assert kc("scan", "--import", "--org", "acme", "--staged").code == 2


def test_json_output_shape(kc: Ks, project: Path) -> None:
    r = kc("scan", "--json")
    assert r.code == 1
    doc = r.json()
    assert isinstance(doc, dict)
    assert doc["summary"]["findings"] == 2
    assert doc["summary"]["scanned"] == 2
    f = doc["findings"][0]
    assert set(f) == {"rule", "title", "path", "line", "column", "end_line", "end_column",
                      "preview", "length", "fingerprint", "entry", "variable", "source",
                      "commit"}
    assert (f["path"], f["line"], f["rule"], f["entry"]) == (".env", 2, "openai-api-key",
                                                             "openai_api_key")
    no_canary(r.out, r.err)


# -- SARIF ------------------------------------------------------------------------
# The properties SARIF 2.1.0 requires (OASIS SARIF v2.1.0: sarifLog §3.13 version and
# runs; run §3.14 tool; tool §3.18 driver; toolComponent §3.19 name; reportingDescriptor
# §3.49 id; result §3.27 message; message §3.11 text or id; region §3.30 lines >= 1),
# plus what GitHub code scanning needs to place an alert (ruleId, a physical location with
# an artifact URI and a start line).
_MESSAGE = {"type": "object", "anyOf": [{"required": ["text"]}, {"required": ["id"]}],
            "properties": {"text": {"type": "string"}}}
SARIF_SHAPE: dict[str, Any] = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {"type": "array", "items": {
            "type": "object",
            "required": ["tool", "results"],
            "properties": {
                "tool": {"type": "object", "required": ["driver"], "properties": {
                    "driver": {"type": "object", "required": ["name", "rules"], "properties": {
                        "name": {"type": "string"},
                        "rules": {"type": "array", "items": {
                            "type": "object", "required": ["id", "shortDescription"],
                            "properties": {"id": {"type": "string"},
                                           "shortDescription": _MESSAGE,
                                           "defaultConfiguration": {
                                               "type": "object", "properties": {"level": {
                                                   "enum": ["none", "note", "warning",
                                                            "error"]}}}}}}}}}},
                "columnKind": {"enum": ["utf16CodeUnits", "unicodeCodePoints"]},
                "results": {"type": "array", "items": {
                    "type": "object",
                    "required": ["message", "ruleId", "locations"],
                    "properties": {
                        "ruleId": {"type": "string"},
                        "ruleIndex": {"type": "integer", "minimum": -1},
                        "level": {"enum": ["none", "note", "warning", "error"]},
                        "kind": {"enum": ["notApplicable", "pass", "fail", "review", "open",
                                          "informational"]},
                        "message": _MESSAGE,
                        "partialFingerprints": {"type": "object",
                                                "additionalProperties": {"type": "string"}},
                        "locations": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["physicalLocation"],
                            "properties": {"physicalLocation": {
                                "type": "object", "required": ["artifactLocation", "region"],
                                "properties": {
                                    "artifactLocation": {"type": "object",
                                                         "required": ["uri"],
                                                         "properties": {"uri": {
                                                             "type": "string"}}},
                                    "region": {"type": "object", "required": ["startLine"],
                                               "properties": {
                                                   "startLine": {"type": "integer",
                                                                 "minimum": 1},
                                                   "startColumn": {"type": "integer",
                                                                   "minimum": 1},
                                                   "endLine": {"type": "integer",
                                                               "minimum": 1},
                                                   "endColumn": {"type": "integer",
                                                                 "minimum": 1}}}}}}}},
                    },
                }},
            },
        }},
    },
}


def test_sarif_output_has_the_required_shape(kc: Ks, project: Path) -> None:
    import jsonschema

    (project / "dir with space").mkdir()
    (project / "dir with space" / "k.env").write_text(f"GITHUB_TOKEN={GH}\n")
    r = kc("scan", "--format", "sarif")
    assert r.code == 1, r.err
    doc = json.loads(r.out)
    jsonschema.validate(doc, SARIF_SHAPE)
    run = doc["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert len(res["partialFingerprints"]["keysafeSecret/v1"]) == 64
    uris = sorted(res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                  for res in run["results"])
    assert uris == [".env", "app.py", "dir%20with%20space/k.env"]
    no_canary(r.out, r.err)


def test_output_file(kc: Ks, project: Path) -> None:
    r = kc("scan", "--format", "sarif", "--output", "out.sarif")
    assert r.code == 1
    assert r.out == ""
    doc = json.loads((project / "out.sarif").read_text())
    assert len(doc["runs"][0]["results"]) == 2
    no_canary((project / "out.sarif").read_text())


# -- suppression --------------------------------------------------------------------
def test_baseline_accepts_current_findings_and_catches_new_ones(kc: Ks, project: Path) -> None:
    r = kc("scan", "--baseline", ".keysafe-baseline.json", "--update-baseline")
    assert r.code == 0, r.err
    text = (project / ".keysafe-baseline.json").read_text()
    no_canary(text)
    doc = json.loads(text)
    assert len(doc["findings"]) == 2
    assert kc("scan", "--baseline", ".keysafe-baseline.json").code == 0

    # Lines moving does not reopen a finding; a new secret does.
    (project / "app.py").write_text(f'\n\nGITHUB_TOKEN = "{GH}"\n')
    (project / "new.yaml").write_text("aws_access_key_id: AKIAZ7Q3R2TUVW4XY5AB\n")
    r = kc("scan", "--baseline", ".keysafe-baseline.json", "--json")
    assert r.code == 1
    doc = r.json()
    assert isinstance(doc, dict)
    assert [f["path"] for f in doc["findings"]] == ["new.yaml"]
    assert doc["summary"]["suppressed"]["baseline"] == 2


def test_bad_baseline_is_refused(kc: Ks, project: Path) -> None:
    (project / "b.json").write_text('{"version": 1, "findings": [{"fingerprint": "x"}]}')
    r = kc("scan", "--baseline", "b.json")
    assert r.code == 2
    assert "b.json: finding 1 has no valid fingerprint" in r.err


def test_allow_comment(kc: Ks, project: Path) -> None:
    (project / "app.py").write_text(f'GITHUB_TOKEN = "{GH}"  # keysafe: allow\n')
    (project / ".env").unlink()
    r = kc("scan")
    assert r.code == 0, r.out
    assert "1 allowed inline" in r.err


# -- import -------------------------------------------------------------------------
def test_import_stores_values_and_rewrites_files(kc: Ks, project: Path) -> None:
    r = kc("scan", "--import", "--org", "acme", "--yes")
    assert r.code == 0, r.err
    no_canary(r.out, r.err)
    assert (project / ".env").read_text() == \
        "DEBUG=1\nOPENAI_API_KEY=keysafe://acme/shared/openai_api_key\n"
    assert (project / "app.py").read_text() == \
        'import os\nGITHUB_TOKEN = "keysafe://acme/shared/github_token"\nNAME = "app"\n'
    got = kc("get", "openai_api_key", "--org", "acme")
    assert got.out.strip() == CANARY
    assert kc("get", "github_token", "--org", "acme").out.strip() == GH
    # Found in files, so marked exposed: due for rotation at once (spec 003).
    st = kc("status", "github_token", "--org", "acme", "--json").json()
    assert st["tags"]["exposed"].startswith("app.py:")
    due = kc("rotate", "status", "--org", "acme", "--json").json()
    assert {(s["name"], s["status"], s["exposed"]) for s in due} == {
        ("openai_api_key", "overdue", True), ("github_token", "overdue", True)}
    # The references are not findings: the tree is clean now.
    assert kc("scan").code == 0


def test_import_json_output_and_domain(kc: Ks, project: Path) -> None:
    (project / "app.py").unlink()
    r = kc("scan", "--import", "--org", "acme", "--domain", "llm", "--yes", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert isinstance(doc, dict)
    (item,) = doc["imports"]
    assert item["status"] == "imported"
    assert item["reference"] == "keysafe://acme/llm/openai_api_key"
    no_canary(r.out, r.err)


def test_import_asks_and_a_refusal_changes_nothing(kc: Ks, project: Path) -> None:
    before = {p.name: p.read_text() for p in project.iterdir() if p.is_file()}
    r = kc("scan", "--import", "--org", "acme", input="n\nn\n")
    assert r.code == 1  # findings remain
    assert "Move OpenAI API key at .env:2" in r.err
    no_canary(r.out, r.err)
    assert {p.name: p.read_text() for p in project.iterdir() if p.is_file()} == before
    assert kc("get", "openai_api_key", "--org", "acme").code == 3


def test_import_one_of_two(kc: Ks, project: Path) -> None:
    r = kc("scan", "--import", "--org", "acme", input="y\nn\n")
    assert r.code == 1
    assert "keysafe://acme/shared/openai_api_key" in (project / ".env").read_text()
    assert GH in (project / "app.py").read_text()


def test_import_same_value_twice_uses_one_secret(kc: Ks, project: Path) -> None:
    (project / "app.py").unlink()
    (project / "nb.py").write_text(f'client = OpenAI(api_key="{CANARY}")\n')
    r = kc("scan", "--import", "--org", "acme", "--yes", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert isinstance(doc, dict)
    assert {i["name"] for i in doc["imports"]} == {"openai_api_key"}
    assert "keysafe://acme/shared/openai_api_key" in (project / "nb.py").read_text()


def test_import_keeps_an_existing_different_secret(kc: Ks, project: Path, put: Any) -> None:
    put("openai_api_key", "sk-proj-" + "A" * 10 + "b1C2d3E4f5G6h7I8j9K0l1M2n3")
    (project / "app.py").unlink()
    r = kc("scan", "--import", "--org", "acme", "--yes", "--json")
    assert r.code == 0, r.err
    doc = r.json()
    assert isinstance(doc, dict)
    assert doc["imports"][0]["name"] == "openai_api_key_2"
    assert kc("get", "openai_api_key_2", "--org", "acme").out.strip() == CANARY


def test_canary_never_printed_by_subprocess(ks: Ks, home: Path) -> None:
    """The installed console script, every format, with and without --import."""
    work = Path.cwd()
    (work / ".env").write_text(f"OPENAI_API_KEY={CANARY}\n")
    outs = [ks("scan"), ks("scan", "--json"), ks("scan", "--format", "sarif"),
            ks("scan", "--import", "--org", "acme", "--yes")]
    assert [r.code for r in outs] == [1, 1, 1, 0]
    for r in outs:
        no_canary(r.out, r.err)


# -- pre-commit ---------------------------------------------------------------------
def test_pre_commit_hook_definition() -> None:
    import yaml

    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = [h for h in hooks if h["id"] == "keysafe-scan"]
    assert hook["entry"] == "keysafe scan --staged"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False
    assert set(hook) <= {"id", "name", "description", "entry", "language", "pass_filenames",
                         "stages", "always_run", "require_serial", "minimum_pre_commit_version",
                         "args", "types", "files", "exclude", "verbose"}
