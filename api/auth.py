"""Bearer tokens and what each may do (constant-time comparison).

Two tokens: the **admin** token may do everything; the optional **read** token
(`FLOODGATE_READ_TOKEN`, for a public reader front end) may only read mailboxes and
delete messages, and never sees envelope recipients (no Bcc leaks). The API's gate
(`api.gate`) checks the token before any body is read; these dependencies decide, per
route after routing (so an unknown method is 405 for everyone), which role may use it.
"""

from __future__ import annotations

import hmac
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer


class Role(StrEnum):
    ADMIN = "admin"
    READER = "reader"


def role_of(header: bytes, admin: str, reader: str | None) -> Role | None:
    """The role an `Authorization` header value grants, or None."""
    scheme, _, given = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    given = given.strip()
    if hmac.compare_digest(given, admin.encode()):
        return Role.ADMIN
    if reader and hmac.compare_digest(given, reader.encode()):
        return Role.READER
    return None


# Declare the two schemes in the OpenAPI document (Swagger UI's Authorize button), and
# for each route which it takes (OpenAPI's security requirements listed for an operation
# are alternatives: either token); the checking is ours, below, so that every refusal has our shape.
ADMIN_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="adminToken",
    description="The admin token: `FLOODGATE_ADMIN_TOKEN`, or the one `floodgate run` wrote "
    "to `var/admin-token`. Every route; a message shows its envelope.",
)
READ_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="readToken",
    description="The read token: `FLOODGATE_READ_TOKEN` (optional). Mailbox and message "
    "routes only (`403` elsewhere); a message shows only what its sender wrote (no Bcc).",
)
AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(ADMIN_BEARER)]
ReadCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(READ_BEARER)]


def _role(request: Request) -> Role:
    header = request.headers.get("authorization", "").encode()
    role = role_of(header, request.app.state.admin_token, request.app.state.read_token)
    if role is None:
        raise HTTPException(
            status_code=401,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.actor = role.value
    return role


def require_token(request: Request, _: AdminCredentials, __: ReadCredentials) -> Role:
    """Any valid token (mailbox routes); the role decides what the response shows."""
    return _role(request)


def require_admin(request: Request, _: AdminCredentials) -> Role:
    """The admin token only (blocklist and allowlist administration)."""
    role = _role(request)
    if role is not Role.ADMIN:
        raise HTTPException(status_code=403, detail="this route needs the admin token")
    return role
