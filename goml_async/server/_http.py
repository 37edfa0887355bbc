"""Reading a request's JSON body within the limits, for every route that takes one.

Needs Starlette (the ``server`` extra) for its Request.
"""

from __future__ import annotations

import json

from starlette.requests import ClientDisconnect, Request

from ._wire import ServerError, shown
from .limits import BodyTooLarge, read_body

__all__ = ["ClientGone", "read_json_body"]


class ClientGone(Exception):
    """The client disconnected before its request body had arrived (nobody to answer)."""


async def read_json_body(request: Request, max_body_bytes: int) -> object:
    """The request's JSON body, read incrementally up to ``max_body_bytes``.

    Raises:
        ServerError: 400 for a bad Content-Length or a body that is not JSON (nested too
            deeply included), 413 for a body over the limit.
        ClientGone: the client left while sending the body.
    """
    declared = request.headers.get("content-length")
    try:
        length = int(declared) if declared is not None else None
    except ValueError:
        raise ServerError(400, f"invalid Content-Length {shown(declared)}") from None
    try:
        body = await read_body(request.stream(), max_body_bytes, declared_length=length)
    except BodyTooLarge as exc:
        raise ServerError(413, str(exc), code="request_too_large") from None
    except ClientDisconnect:
        raise ClientGone from None
    try:
        return json.loads(body)
    except RecursionError:
        raise ServerError(
            400, "the request body is not usable JSON: nested too deeply", code="invalid_json"
        ) from None
    except ValueError as exc:  # bad JSON, bad UTF-8, an integer with too many digits
        raise ServerError(
            400, f"the request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
