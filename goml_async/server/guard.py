"""Who may talk to the server from a browser: the Host, Origin and Content-Type checks.

A key-less server on loopback is still reachable from any web page the user opens: a page can
POST to ``http://127.0.0.1:8090`` (a "simple" cross-site request needs no CORS preflight when
its Content-Type is ``text/plain``), and a DNS-rebinding page reaches it under its own name
(``Host: rebind.evil.example``). Three checks close that, before any route runs:

- **Host**: the name must be ``localhost``, a ``*.localhost`` name, an IP address (a rebinding
  attack needs a DNS name, so an address is always safe) or one of ``allowed_hosts``
  (``"*"`` allows any); otherwise 400.
- **Origin** (POST and other unsafe methods): when a browser sends one, it must be the
  server's own origin or one of ``allowed_origins`` (``"*"`` allows any); otherwise 403.
- **Content-Type** (POST): ``application/json`` (a ``charset`` of UTF-8 may follow), which a
  cross-site page cannot send without a CORS preflight; otherwise 415.

No CORS header is ever sent, so a preflight (OPTIONS) is answered 405 and the browser blocks
the cross-site request.

Example:
    >>> guard = RequestGuard()
    >>> guard.check("POST", [(b"host", b"rebind.evil.example")]).status
    400
    >>> guard.check("GET", [(b"host", b"127.0.0.1:8090")]) is None
    True
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import urlsplit

from ._wire import ServerError, shown

__all__ = ["RequestGuard", "host_allowed", "host_name", "is_json_media_type"]

#: Methods a cross-site page could use to change something (GET and HEAD only read).
_UNSAFE: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def host_name(host: str) -> str:
    """The name in a ``Host`` header value: no port, no IPv6 brackets, lower case, no final dot.

    Example:
        >>> host_name("[::1]:8090"), host_name("LocalHost.:80")
        ('::1', 'localhost')
    """
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(name: str, allowed: Iterable[str] = ()) -> bool:
    """Whether a host name (from :func:`host_name`) may be served.

    ``localhost``, ``*.localhost`` and IP addresses always may; ``allowed`` adds exact names,
    ``*.domain`` patterns (its subdomains) and ``*`` (any name).
    """
    if name == "localhost" or name.endswith(".localhost") or _is_address(name):
        return True
    for pattern in allowed:
        pattern = pattern.lower().rstrip(".")
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def _origin_key(scheme: str, netloc: str) -> str:
    """``netloc`` without the scheme's default port, lower case."""
    netloc = netloc.lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and netloc.endswith(f":{default}"):
        netloc = netloc[: -len(default) - 1]
    return netloc


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
        return False
    # The page's own origin names the host the browser asked for, whatever its scheme (a TLS
    # proxy in front of the server sees https origins on plain-HTTP requests).
    return _origin_key(parts.scheme, parts.netloc) in {
        _origin_key(scheme, host) for scheme in _DEFAULT_PORTS
    }


def is_json_media_type(content_type: str) -> bool:
    """Whether a Content-Type is ``application/json``, with at most a UTF-8 ``charset``.

    Example:
        >>> is_json_media_type("application/json; charset=UTF-8"), is_json_media_type("text/plain")
        (True, False)
    """
    media, *params = (part.strip().lower() for part in content_type.split(";"))
    if media != "application/json":
        return False
    for param in params:
        key, _, value = param.partition("=")
        if key.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


class RequestGuard:
    """The Host, Origin and Content-Type checks of one server.

    Args:
        allowed_hosts: ``Host`` names accepted besides localhost and IP addresses.
        allowed_origins: origins that may POST besides the server's own.
    """

    __slots__ = ("_any_origin", "_hosts", "_origins")

    def __init__(
        self, allowed_hosts: Sequence[str] = (), allowed_origins: Sequence[str] = ()
    ) -> None:
        self._hosts = tuple(allowed_hosts)
        self._origins = frozenset(origin.lower().rstrip("/") for origin in allowed_origins)
        self._any_origin = "*" in self._origins

    def check(self, method: str, headers: Iterable[tuple[bytes, bytes]]) -> ServerError | None:
        """The error reply for a request that must be refused, or None to serve it."""
        found: dict[bytes, str] = {}
        for name, value in headers:
            if name in (b"host", b"origin", b"content-type") and name not in found:
                found[name] = value.decode("latin-1")
        host = found.get(b"host")
        # Browsers always send Host; a request without one (HTTP/1.0) is not a rebinding.
        if host is not None and not host_allowed(host_name(host), self._hosts):
            return ServerError(
                400,
                f"the Host header {shown(host)} is not served here (only localhost, IP "
                "addresses and the names given with --allowed-host / allowed_hosts)",
                code="invalid_host",
            )
        if method not in _UNSAFE:
            return None
        origin = found.get(b"origin")
        if origin is not None and not self._origin_ok(origin, host or ""):
            return ServerError(
                403,
                f"cross-origin request from {shown(origin)} refused (allow it with "
                "--allowed-origin / allowed_origins)",
                code="cross_origin",
            )
        content_type = found.get(b"content-type")
        if content_type is None or not is_json_media_type(content_type):
            return ServerError(
                415,
                f"the body must be JSON sent as 'Content-Type: application/json', got "
                f"{shown(content_type) if content_type is not None else 'no Content-Type'}",
                code="unsupported_media_type",
            )
        return None

    def _origin_ok(self, origin: str, host: str) -> bool:
        if self._any_origin or origin.lower().rstrip("/") in self._origins:
            return True
        return origin != "null" and _same_origin(origin, host)
