"""Which page origins may open a websocket: exact scheme, host and port, nothing else.

Channels' AllowedHostsOriginValidator compares the host only, so http://portal:9999 or
https://portal passed for a site served at http://portal:8000. Here an origin is accepted
only when its normalised "scheme://host:port" is one of settings.VMPORTAL_SITE_ORIGINS.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(origin: str) -> str | None:
    """"scheme://host:port" with the default port spelled out, or None if it is not an http(s) origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:  # a port out of range or not a number
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}"


def default_site_origins(*, allowed_hosts: list[str], port: int, https: bool, trusted: list[str]) -> list[str]:
    """The origins a site with these settings is served from.

    Over plain HTTP each allowed host at the ASGI server's port (what `make run` serves); with
    HTTPS each allowed host on 443 (the reverse proxy's port). Wildcard hosts ("*", ".example.org")
    name no exact origin: such sites set VMPORTAL_SITE_ORIGINS. CSRF trusted origins are added.
    """
    scheme, site_port = ("https", 443) if https else ("http", port)
    hosts = [h for h in allowed_hosts if h != "*" and not h.startswith(".")]
    return [f"{scheme}://{host}:{site_port}" for host in hosts] + list(trusted)


def site_origins(configured: list[str]) -> frozenset[str]:
    """The configured origins normalised; a malformed one stops the server with its name."""
    normalised = set()
    for origin in configured:
        value = normalise_origin(origin)
        if value is None:
            raise ImproperlyConfigured(
                f"VMPORTAL_SITE_ORIGINS: {origin!r} is not an origin like https://portal.example.org or http://127.0.0.1:8000."
            )
        normalised.add(value)
    return frozenset(normalised)


class SiteOriginValidator:
    """ASGI middleware: a websocket whose Origin is not exactly a site origin is refused (403)."""

    def __init__(self, application, origins: list[str]):
        self.application = application
        self.origins = site_origins(origins)

    def origin_allowed(self, headers) -> bool:
        values = [value for name, value in headers if name == b"origin"]
        if len(values) != 1:
            return False
        try:
            origin = values[0].decode("ascii")
        except UnicodeDecodeError:
            return False
        return normalise_origin(origin) in self.origins

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not self.origin_allowed(scope.get("headers", [])):
            return await deny_websocket(receive, send)
        return await self.application(scope, receive, send)


async def deny_websocket(receive, send) -> None:
    """Refuse the handshake: a close before accepting is answered with HTTP 403."""
    # (Plain ASGI rather than Channels' WebsocketDenier: settings import this module, Channels'
    # consumers must not be imported before Django is set up.)
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close"})
