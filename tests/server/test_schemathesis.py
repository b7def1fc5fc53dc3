"""Schemathesis against the served OpenAPI document: no 5xx, and every response matches
the schema the document gives for it. Run once as an all-orgs admin and once as an
all-orgs service identity (between them they reach every operation's success path).

Each operation gets its own bounded Hypothesis run (positive data, then schema-violating
data); failures are collected and reported together. The operations are driven directly
rather than through ``schema.parametrize()``: schemathesis' lazy fixture loader touches a
pytest internal (``request.node._nodeid``) that the installed pytest no longer has.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from .serverkit import OPENAI, VALUE_1, bearer, build_app, make_token

CHECKS = [not_a_server_error, response_schema_conformance]
ROLES = {"admin": ["admin"], "service": ["service"]}
# Examples per operation. The service identity is refused most operations (403), so its
# run is shorter; it exists for the value paths and for the shape of those refusals.
BUDGET = {"admin": {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10},
          "service": {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 5}}


def _fuzz(operation: Any, mode: GenerationMode, examples: int,
          headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


@pytest.mark.parametrize("role", list(ROLES))
def test_openapi_contract(role: str, tmp_path: Path) -> None:
    # NORMAL sync: this test is about the contract, not durability (fewer fsyncs).
    app = build_app(tmp_path / "home", auth_fail_limit=1_000_000, sqlite_synchronous="NORMAL")
    m = app.keysafe.manager
    # Some data, so generated requests can land on existing secrets as well.
    for org in ("acme", "0", "a", "A"):
        m.put(OPENAI, VALUE_1, org)
        m.put("0", "some-value", org)
    headers = bearer(make_token(app, f"fuzz-{role}", ROLES[role], None))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    started = time.monotonic()
    failures: list[str] = []
    seen = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        seen += 1
        for mode, examples in BUDGET[role].items():
            try:
                _fuzz(operation, mode, examples, headers)
            except Unsatisfiable:
                # No parameters and no body: there is no schema-violating request to make.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:
                failures.append(f"{operation.label} [{mode.value}]: {exc}")
    assert seen >= 14, "the OpenAPI document lost operations"
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - started < 60
