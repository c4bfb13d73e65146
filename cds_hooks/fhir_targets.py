"""Which FHIR servers the service may call, decided on parsed URLs, never on string prefixes.

A client names its FHIR server in every call, so without a check anyone able to call the
service could make it fetch from any address (cloud metadata, internal admin pages) and
carry the ``fhirAuthorization`` token there. An allow-list entry matches on scheme, host,
port and path (segment-wise); with no allow-list, addresses that are not public are refused
unless explicitly allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URL_CHARS = 2048


class TargetRefused(ValueError):
    """A URL the service must not fetch from; the message says why (never the URL's secrets)."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class Target:
    """A parsed absolute http(s) URL without user info."""

    origin: Origin
    path: str

    @property
    def base_url(self) -> str:
        host = f"[{self.origin.host}]" if ":" in self.origin.host else self.origin.host
        default = DEFAULT_PORTS[self.origin.scheme] == self.origin.port
        netloc = host if default else f"{host}:{self.origin.port}"
        return f"{self.origin.scheme}://{netloc}{self.path}"


def parse_target(url: str) -> Target:
    """Parse ``url`` strictly; raise TargetRefused for anything that is not a plain http(s) URL."""
    if len(url) > MAX_URL_CHARS:
        raise TargetRefused(f"the URL is longer than {MAX_URL_CHARS} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        raise TargetRefused("the URL contains spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetRefused("the URL is malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise TargetRefused("the URL must be http or https")
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        raise TargetRefused("the URL must not contain user info")
    host = (parts.hostname or "").lower()
    if not host:
        raise TargetRefused("the URL has no host")
    if parts.fragment:
        raise TargetRefused("the URL must not have a fragment")
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        raise TargetRefused("the URL's path must not contain '.' or '..' segments")  # would step out of an allowed path
    return Target(Origin(scheme, host, port or DEFAULT_PORTS[scheme]), parts.path.rstrip("/"))


@dataclass(frozen=True)
class AllowEntry:
    origin: Origin
    path: str

    def admits(self, target: Target) -> bool:
        return target.origin == self.origin and (
            not self.path or target.path == self.path or target.path.startswith(self.path + "/")
        )


def parse_allow_list(entries: Iterable[str]) -> tuple[AllowEntry, ...]:
    """Parse configured base URLs; raise ValueError naming a bad entry (checked at start-up)."""
    parsed = []
    for entry in entries:
        try:
            target = parse_target(entry)
        except TargetRefused as exc:
            raise ValueError(f"FHIR server allow-list entry {entry!r}: {exc}") from None
        parsed.append(AllowEntry(target.origin, target.path))
    return tuple(parsed)


def address_refused(address: str, *, allow_private: bool) -> str | None:
    """Why an IP address must not be fetched from when no allow-list is configured, or None.

    Link-local (cloud metadata), multicast, unspecified and reserved addresses are never FHIR
    servers; loopback and private ones are refused unless ``allow_private`` (JWT off in
    development). ``CDS_HOOKS_FHIR_ALLOW_PRIVATE`` skips this check altogether."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "a link-local, multicast, unspecified or reserved address"
    if not allow_private and (ip.is_loopback or ip.is_private or not ip.is_global):
        return "a loopback or private address"
    return None
