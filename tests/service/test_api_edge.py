"""The HTTP edge against a running service: bodies that are not JSON, and the OpenAPI document
(problem answers, security schemes, exclusive members, examples the service accepts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
import redis

from tests.service.conftest import AUTH, serve

JSON_ROUTES = ("/readings", "/forecast")


@pytest.fixture
def api(make_settings) -> Iterator[httpx.Client]:
    with serve(make_settings()) as client:
        yield client


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == f"urn:himnet:problem:{slug}" and body["status"] == status
    return body


def _nothing_stored(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert not list(client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("headers,content", [
    ({"Content-Type": "text/plain"}, b'{"readings": []}'),
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"readings=1"),
    ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x\r\n\r\n1\r\n--x--\r\n"),
    ({}, b'{"sensors": ["a"]}'),  # no Content-Type at all
], ids=["text", "form", "multipart", "none"])
def test_a_body_that_is_not_json_is_415(api: httpx.Client, redis_url: str, prefix: str,
                                        path: str, headers: dict[str, str],
                                        content: bytes) -> None:
    r = api.post(path, content=content, headers={**AUTH, **headers})
    body = _problem(r, 415, "unsupported-media-type")
    assert "application/json" in body["detail"] and body["accepted"] == ["application/json"]
    _nothing_stored(redis_url, prefix)


@pytest.mark.parametrize("path", JSON_ROUTES)
@pytest.mark.parametrize("content", [b'{"readings": [', b"\xff\xfe{}", b"{'a': 1}", b"nul"],
                         ids=["truncated", "not-utf8", "single-quotes", "bad-literal"])
def test_an_undecodable_body_is_400(api: httpx.Client, redis_url: str, prefix: str, path: str,
                                    content: bytes) -> None:
    r = api.post(path, content=content, headers={**AUTH, "Content-Type": "application/json"})
    body = _problem(r, 400, "invalid-json")
    assert "JSON" in body["detail"]
    _nothing_stored(redis_url, prefix)


def test_an_empty_forecast_body_needs_no_content_type(api: httpx.Client) -> None:
    r = api.post("/forecast")  # the buffer is empty: the usual answer, not a 415
    _problem(r, 404, "no-readings")
    ok = api.post("/forecast", content=b"{}", headers={"Content-Type": "application/merge-patch+json"})
    _problem(ok, 404, "no-readings")  # application/*+json is JSON too


# --- the OpenAPI document ------------------------------------------------------------------------
def test_every_error_answer_is_a_documented_problem(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    seen = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for code, answer in op["responses"].items():
                if code.startswith("4"):
                    seen += 1
                    assert list(answer["content"]) == ["application/problem+json"], (path, code)
                    schema = answer["content"]["application/problem+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ProblemDetail"}
    assert seen >= 15
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path in JSON_ROUTES:
        assert {"400", "413", "415", "422"} <= set(doc["paths"][path]["post"]["responses"])


def test_the_api_key_is_a_security_scheme(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                 "description": schemes["ApiKey"]["description"]}
    assert schemes["Bearer"]["type"] == "http" and schemes["Bearer"]["scheme"] == "bearer"
    required = [{"ApiKey": []}, {"Bearer": []}]
    assert doc["paths"]["/readings"]["post"]["security"] == required
    assert doc["paths"]["/admin/cache"]["delete"]["security"] == required
    assert doc["paths"]["/forecast"]["post"]["security"] == [{}, *required]  # optional
    assert "security" not in doc["paths"]["/livez"]["get"]


def _validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_exclusive_members_are_stated_in_the_schema(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    request = _validator(doc, "ForecastRequest")
    assert request.is_valid({"horizons": [1]}) and request.is_valid({"horizon_minutes": [5.0]})
    assert not request.is_valid({"horizons": [1], "horizon_minutes": [5.0]})
    window = _validator(doc, "InputWindow")
    stamps = ["2026-01-01T00:00:00Z"]
    assert window.is_valid({"timestamps": stamps, "values": [[1.0, None]]})
    assert not window.is_valid({"timestamps": stamps})
    assert not window.is_valid({"timestamps": stamps, "values": [[1.0]], "series": {}})
    assert "`null` marks a missing reading" in str(doc["components"]["schemas"]["InputWindow"])


def test_every_documented_example_is_accepted(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    ran = []
    for path in ("/readings", "/forecast"):  # readings first: the forecasts need a buffer
        media = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        for name, example in media["examples"].items():
            assert _validator(doc, "ReadingsIn" if path == "/readings" else "ForecastRequest") \
                .is_valid(example["value"]), name
            r = api.post(path, json=example["value"], headers=AUTH)
            assert r.status_code == 200, (path, name, r.text)
            ran.append(name)
    assert len(ran) >= 5
    snapshot = doc["components"]["schemas"]["Snapshot"]["properties"]
    body = {"readings": [{"timestamp": snapshot["timestamp"]["examples"][0],
                          "values": snapshot["values"]["examples"][0]}]}
    assert api.post("/readings", json=body, headers=AUTH).status_code == 200


def test_the_schema_names_the_bundles_sensors(api: httpx.Client) -> None:
    doc = api.get("/openapi.json").json()
    ids = [s["id"] for s in api.get("/embeddings").json()["sensors"]]
    values = doc["components"]["schemas"]["Snapshot"]["properties"]["values"]
    assert values["propertyNames"] == {"enum": ids}
    value = values["additionalProperties"]  # a number, or null (a missing reading)
    number = next(b for b in value.get("anyOf", [value]) if b.get("type") == "number")
    assert number["minimum"] == 0.0
    assert number["maximum"] == 10_000.0


def test_docs_assets_come_from_the_service(api: httpx.Client) -> None:
    for page in ("/docs", "/redoc"):
        html = api.get(page).text
        assert "cdn." not in html and "/static-offline-docs/" in html, page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        r = api.get(f"/static-offline-docs/{asset}")
        assert r.status_code == 200 and len(r.content) > 100_000, asset
