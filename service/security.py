"""API-key checks: required for writes and admin actions, optional for reads.

The key comes from ``HIMNET_API_KEY`` or a mounted secret file (``HIMNET_API_KEY_FILE``) and is
compared in constant time. Clients send ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.
The FastAPI dependencies that apply these checks are ``require_key`` / ``read_access`` in
``service/deps.py``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from service.problems import Problem

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="himnet"'}


@dataclass(frozen=True)
class Access:
    """Who may do what: the resolved key (None: none configured) and the two switches."""

    api_key: str | None
    auth_disabled: bool
    protect_reads: bool


def _presented(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return None


def check_key(request: Request, access: Access) -> None:
    """Raise 401/403 unless ``request`` carries the configured key (or auth is disabled)."""
    expected = access.api_key
    if expected is None:
        if access.auth_disabled:
            return
        raise Problem(403, "writes-disabled",
                      "no API key is configured on this server, so writes and admin actions are "
                      "refused: set HIMNET_API_KEY or HIMNET_API_KEY_FILE (or HIMNET_AUTH_DISABLED"
                      "=true for local experiments)")
    given = _presented(request)
    if given is None:
        raise Problem(401, "unauthorized", "this endpoint needs an API key: send "
                      "'X-API-Key: <key>' or 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Problem(401, "unauthorized", "the API key is not valid", headers=_CHALLENGE)
