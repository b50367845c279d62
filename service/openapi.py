"""The OpenAPI document in the shape clients (and the fuzz test) rely on.

FastAPI derives the document from the routes and ``service/schemas.py``; :func:`shape_document`
then states what pydantic cannot: every error answer is ``application/problem+json``
(:class:`~service.schemas.ProblemDetail`), which members exclude each other, and that ``null``
marks a missing reading. :func:`live_document` adds what only the served bundle knows — its
sensor ids, the plausible value range and request examples on the current slot — so every
example in the document is one the running service accepts.
"""

from __future__ import annotations

import copy
from typing import Any

from service.state import Components

PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDetail"}
PROBLEM_CONTENT = {"application/problem+json": {"schema": PROBLEM_SCHEMA}}
MAX_ENUM_SENSORS = 2_000  # beyond this the sensor list is left out of the schema (GET /embeddings)
NULL_MARKS_MISSING = " `null` marks a missing reading (NaN is not JSON)."

Doc = dict[str, Any]


def _operations(doc: Doc) -> list[Doc]:
    return [op for item in doc.get("paths", {}).values() for op in item.values()
            if isinstance(op, dict) and "responses" in op]


def _problem_answers(doc: Doc) -> None:
    """Every 4xx (and each 5xx documented as a problem) as problem+json with the ProblemDetail
    schema: what the handlers of ``service/problems.py`` send. /readyz's 503 stays a Health."""
    for op in _operations(doc):
        for code, answer in op["responses"].items():
            documented = str(answer.get("content", {}))
            if code.startswith("4") or (code.startswith("5") and "ProblemDetail" in documented):
                answer["content"] = copy.deepcopy(PROBLEM_CONTENT)
    schemas = doc.get("components", {}).get("schemas", {})
    if "HTTPValidationError" not in str(doc.get("paths")):  # FastAPI's 422 shape, never sent
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)


def _exclusive(schema: Doc, pairs: list[tuple[str, str]]) -> None:
    """Members that must not be given together, as ``not: {required: [a, b]}`` (per pair)."""
    rules = [{"not": {"required": list(pair)}} for pair in pairs]
    schema.setdefault("allOf", []).extend(rules)


def _optional_key(doc: Doc) -> None:
    """Reads take the key only when the server protects reads (HIMNET_PROTECT_READS): an
    operation that may answer 401 without requiring a scheme lists the key as optional."""
    schemes = list(doc.get("components", {}).get("securitySchemes", {}))
    for op in _operations(doc):
        if "401" in op["responses"] and "security" not in op:
            op["security"] = [{}, *({name: []} for name in schemes)]


def shape_document(doc: Doc) -> Doc:
    """The static corrections (in place; returns ``doc``)."""
    _problem_answers(doc)
    _optional_key(doc)
    schemas = doc["components"]["schemas"]
    _exclusive(schemas["ForecastRequest"], [("horizons", "horizon_minutes"), ("window", "as_of")])
    window = schemas["InputWindow"]
    _exclusive(window, [("values", "series")])
    window.setdefault("anyOf", [{"required": ["values"]}, {"required": ["series"]}])
    for name in ("values", "series"):
        member = window["properties"][name]
        member["description"] = member.get("description", "") + NULL_MARKS_MISSING.lstrip()
    return doc


# --- what the served bundle adds ----------------------------------------------------------------
def _numbers(schema: Doc) -> list[Doc]:
    """The ``type: number`` schemas inside ``schema`` (itself, or branches of anyOf/oneOf)."""
    if schema.get("type") == "number":
        return [schema]
    found: list[Doc] = []
    for key in ("anyOf", "oneOf", "items", "additionalProperties"):
        part = schema.get(key)
        for sub in part if isinstance(part, list) else [part] if isinstance(part, dict) else []:
            found.extend(_numbers(sub))
    return found


def _bundle_facts(doc: Doc, parts: Components) -> None:
    """Sensor ids as the allowed names, and the plausible range on every reading value."""
    schemas = doc["components"]["schemas"]
    ids = list(parts.manifest.sensor_ids)
    names = {"enum": ids} if len(ids) <= MAX_ENUM_SENSORS else None
    low, high = parts.settings.value_min, parts.settings.value_max
    values = schemas["Snapshot"]["properties"]["values"]
    series = schemas["InputWindow"]["properties"]["series"]
    for member in (values, series):
        for number in _numbers(member):
            number.update(minimum=low, maximum=high)
        if names:
            _nullable_object(member)["propertyNames"] = names
    if names:
        sensors = schemas["ForecastRequest"]["properties"]["sensors"]
        for branch in sensors.get("anyOf", [sensors]):
            if branch.get("type") == "array":
                branch["items"] = {"type": "string", **names}


def _nullable_object(member: Doc) -> Doc:
    """The ``type: object`` branch of a member that may also be null."""
    for branch in member.get("anyOf", []):
        if branch.get("type") == "object":
            return branch
    return member


def _examples(parts: Components) -> tuple[Doc, Doc]:
    """Request examples on the current slot: (readings, forecast) as OpenAPI ``examples``."""
    clock, manifest, settings = parts.clock, parts.manifest, parts.settings
    now = clock.now_slot()
    ids = list(manifest.sensor_ids)[:3]
    value = min(max(61.5, settings.value_min), settings.value_max)
    readings = {
        "one-slot": {"summary": "Some sensors at the current slot",
                     "value": {"readings": [{"timestamp": clock.iso(now),
                                             "values": {s: value for s in ids}}]}},
        "late-readings": {"summary": "Two slots at once (late readings are normal)",
                          "value": {"readings": [
                              {"timestamp": clock.iso(now - 1), "values": {ids[0]: value}},
                              {"timestamp": clock.iso(now), "values": {ids[0]: value}}]}},
    }
    steps = manifest.in_steps
    window = {"timestamps": [clock.iso(now - steps + 1 + i) for i in range(steps)],
              "series": {ids[0]: [value] * (steps - 1) + [None]}}
    forecast = {
        "everything": {"summary": "Every sensor and horizon from the newest buffered window",
                       "value": {}},
        "some": {"summary": "Two sensors, first and last horizon",
                 "value": {"sensors": ids[:2], "horizons": [1, manifest.out_steps]}},
        "minutes": {"summary": "Horizons in minutes",
                    "value": {"sensors": ids[:1],
                              "horizon_minutes": [float(clock.interval_s) / 60.0]}},
        "stateless": {"summary": "From a window sent with the request (null: missing)",
                      "value": {"sensors": ids[:1], "window": window}},
    }
    return readings, forecast


def live_document(doc: Doc, parts: Components) -> Doc:
    """A copy of the shaped ``doc`` with the served bundle's facts and examples."""
    out = copy.deepcopy(doc)
    _bundle_facts(out, parts)
    readings, forecast = _examples(parts)
    for path, examples in (("/readings", readings), ("/forecast", forecast)):
        body = out["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        body["examples"] = examples
    first = readings["one-slot"]["value"]["readings"][0]
    members = out["components"]["schemas"]["Snapshot"]["properties"]
    members["timestamp"]["examples"] = [first["timestamp"]]
    members["values"]["examples"] = [first["values"]]
    return out
