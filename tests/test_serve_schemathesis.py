"""Property-based fuzzing of every operation in ``/openapi.json`` (schemathesis): no input gives a 5xx.

Schemathesis generates bodies from the schema; generated ``model`` names are almost never served (a 404), so
every body is also sent with ``model`` set to the served name, which drives random sampling settings, stop
strings, control specs and prompts into the engine. Slow: a few hundred requests on the tiny model."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

schemathesis = pytest.importorskip("schemathesis")


def test_no_generated_request_gets_a_5xx(tiny):
    from fastapi.testclient import TestClient
    from hypothesis import HealthCheck, given, settings

    from lmcontrol.engine import Engine
    from lmcontrol.serve.app import create_app
    from lmcontrol.serve.config import ServeSettings
    from lmcontrol.serve.controls import ControlStore

    store = ControlStore(tiny)
    store.load("terse", "system:Be terse.", trusted=True)
    app = create_app(Engine(tiny, max_batch_size=8), store,
                     ServeSettings(max_tokens=8, max_prompt_tokens=128, score_metrics=("sentiment",)))
    failures: list[tuple] = []
    with TestClient(app):
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/controls/load"}

        def fuzz(op):
            @given(case=op.as_strategy())
            @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case):
                bodies = [case.body]
                if isinstance(case.body, dict) and "model" in case.body:
                    bodies.append({**case.body, "model": "smollm2"})
                for body in bodies:
                    case.body = body
                    r = case.call()
                    if r.status_code >= 500:
                        failures.append((op.method, op.path, r.status_code, r.text[:300], body))

            check()

        for op in operations:
            fuzz(op)
    assert not failures, failures[:3]
