"""Scan reports as data: the JSON document of ``--format json`` and SARIF 2.1.0 for code
scanning (GitHub's upload-sarif and any other SARIF consumer).

Both carry masked previews and fingerprints only. SARIF results point at the file and
line, with the fingerprint as a partial fingerprint so that the same secret keeps one
alert across runs; no snippet is included, since a snippet would be the secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from keysafe.scanning.findings import Finding

__all__ = ["SARIF_SCHEMA", "to_json", "to_sarif"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_HELP = ("Move the value into keysafe (`keysafe scan --import --org ORG`) and refer to it "
         "as keysafe://org/domain/name; then rotate it, since it was committed. If it is not "
         "a secret, add `# keysafe: allow` to the line or record it in the baseline.")


def to_json(findings: Sequence[Finding], *, scanned: int, skipped: int, allowed: int,
            baselined: int, mode: str) -> dict[str, Any]:
    return {
        "version": 1,
        "mode": mode,
        "findings": [f.to_dict() for f in findings],
        "summary": {
            "findings": len(findings),
            "scanned": scanned,
            "skipped": skipped,
            "suppressed": {"allow_comment": allowed, "baseline": baselined},
        },
    }


def _location(path: str) -> dict[str, str]:
    # SARIF artifact locations are URI references: relative to %SRCROOT% and %-encoded,
    # or an absolute file: URI for a path outside the directory the scan ran in.
    if path.startswith("/"):
        from pathlib import Path

        return {"uri": Path(path).as_uri()}
    return {"uri": quote(path, safe="/"), "uriBaseId": "%SRCROOT%"}


def to_sarif(findings: Sequence[Finding], *, version: str) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run; rules are those the results refer to."""
    rule_index: dict[str, int] = {}
    rules: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for f in findings:
        if f.rule not in rule_index:
            rule_index[f.rule] = len(rules)
            rules.append({
                "id": f.rule,
                "name": "".join(p.capitalize() for p in f.rule.split("-")),
                "shortDescription": {"text": f.title},
                "fullDescription": {"text": f"{f.title} committed to the repository."},
                "help": {"text": _HELP, "markdown": _HELP},
                "defaultConfiguration": {"level": "error"},
                "properties": {"tags": ["security", "secret"], "security-severity": "9.0",
                               "precision": "high" if f.rule != "high-entropy-assignment"
                               else "medium"},
            })
        where = f" (commit {f.commit[:12]})" if f.commit else ""
        var = f" assigned to {f.variable}" if f.variable else ""
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": rule_index[f.rule],
            "level": "error",
            "kind": "fail",
            "message": {"text": f"{f.title}{var}: {f.preview}{where}"},
            "locations": [{
                "physicalLocation": {
                    "artifactLocation": _location(f.path),
                    "region": {"startLine": f.line, "startColumn": f.column,
                               "endLine": f.end_line, "endColumn": f.end_column},
                },
            }],
            "partialFingerprints": {"keysafeSecret/v1": f.fingerprint},
            "properties": {"source": f.source, "entry": f.entry, "length": f.length,
                           **({"commit": f.commit} if f.commit else {})},
        }
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "keysafe", "semanticVersion": version,
                                "version": version,
                                "rules": rules}},
            "originalUriBaseIds": {"%SRCROOT%": {"description": {
                "text": "The directory keysafe scan was run from."}}},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
