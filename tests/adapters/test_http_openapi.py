"""``/openapi.json`` is valid OpenAPI 3.1, and property-based requests against it find no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.adapters._server import ADMIN, bearer, build_app, build_service, serve


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(build_app(build_service())) as url:
        yield url


@pytest.fixture(scope="module")
def api(base_url: str) -> Any:
    return schemathesis.openapi.from_url(base_url + "/openapi.json")


def test_openapi_document_is_valid_openapi_3_1(base_url: str) -> None:
    doc: dict[str, Any] = httpx.get(base_url + "/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)
    resume = doc["paths"]["/executions/{run_id}/resume"]["post"]
    assert resume["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ResumeBody"
    }
    assert {"409", "412", "413", "422", "423"} <= set(resume["responses"])
    assert set(doc["paths"]) == {
        "/executions",
        "/executions/paused",
        "/executions/{run_id}",
        "/executions/{run_id}/pause",
        "/executions/{run_id}/resume",
        "/executions/{run_id}/release",
        "/executions/{run_id}/cancel",
        "/executions/{run_id}/history",
        "/stats",
        "/health",
    }


def test_api_never_answers_a_server_error(api: Any) -> None:
    """Every operation, fed schemathesis-generated requests: no 5xx, responses match the schema."""
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) == 11
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers=bearer(ADMIN),
                checks=[
                    not_a_server_error,
                    response_schema_conformance,
                    status_code_conformance,
                    content_type_conformance,
                ],
            )

        check()
