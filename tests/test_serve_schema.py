"""schemathesis: requests generated from the OpenAPI schema get no 5xx and answers that match the schema."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(mini, tmp_path_factory):
    from blend.serve import ServeConfig, create_app

    app = create_app(mini, config=ServeConfig(max_steps=2, max_n=3, max_k=2, max_rows=2, max_n_seeds=1),
                     home=tmp_path_factory.mktemp("home"))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_follows_its_schema(case):
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                   status_code_conformance)

    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
