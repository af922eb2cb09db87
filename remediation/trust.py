"""What only the operator who deploys Autoheal may allow (see docs/security.md).

A policy author (the admin role) decides when and how to act; the operator decides, in environment
settings that no role can change through Autoheal, what an action may reach at all:

- ``AUTOHEAL_COMMAND_ALLOW``: the programs a ``command`` action may run (absolute paths; empty
  means none). A policy may name a program by its path or by a bare name that the worker's
  ``PATH`` resolves to an allowed path.
- ``AUTOHEAL_WEBHOOK_ACTION_ALLOW``: the URL prefixes a ``webhook`` action may call. A policy's
  ``params.allow`` can only narrow them.
- ``AUTOHEAL_ACTION_SECRETS``: the environment variables a policy may read into webhook headers.

Prefixes are parsed as URLs (scheme, host, port, path), never compared as strings:
``http://127.0.0.1`` allows port 80 of that address and nothing else, and ``https://h/a`` allows
``/a`` and ``/a/...`` but not ``/ab``.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


class NotPermitted(ValueError):
    """Outside what the operator allows; the message names the program, URL or variable."""


@dataclass(frozen=True)
class UrlPrefix:
    """One parsed allow-list entry: scheme, host, port and path prefix."""

    scheme: str
    host: str
    port: int
    path: str

    def allows(self, url: str) -> bool:
        """Whether ``url`` is at or below this prefix (same scheme, host and port; path by segment)."""
        try:
            other = parse_url(url)
        except ValueError:
            return False
        if (other.scheme, other.host, other.port) != (self.scheme, self.host, self.port):
            return False
        if self.path in ("", "/") or other.path == self.path:
            return True
        base = self.path if self.path.endswith("/") else self.path + "/"
        return other.path.startswith(base)

    @property
    def literal_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host when it is written as an IP literal (an explicit decision to reach it)."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def _host(raw: str) -> str:
    host = raw.lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))  # one spelling per address: ::1, not 0:0:0:0:0:0:0:1
    except ValueError:
        return host


def parse_url(text: str) -> UrlPrefix:
    """Parse an http(s) URL or prefix; ValueError says what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("must be an http:// or https:// URL")
    parts = urlsplit(text.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise ValueError(f"{text!r} must not carry credentials")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError(f"{text!r} has an invalid port") from None
    path = unquote(parts.path)
    if "/../" in path + "/" or "/./" in path + "/":
        raise ValueError(f"{text!r} has dot segments in its path")
    return UrlPrefix(parts.scheme, _host(parts.hostname), port, path)


def parse_url_prefixes(entries: Iterable[str], *, source: str) -> list[UrlPrefix]:
    """Parse an allow-list; the error names its source and the entry."""
    parsed = []
    for entry in entries:
        try:
            parsed.append(parse_url(entry))
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    return parsed


def webhook_prefix(url: str, *, operator: Iterable[str], policy: Iterable[str] | None) -> UrlPrefix:
    """The operator's prefix that allows ``url``, after the policy's own list narrowed it.

    The operator's prefix is returned because only it may name an internal address as an IP
    literal: a policy cannot open a way to an address the operator did not.
    """
    operator_prefixes = parse_url_prefixes(operator, source="AUTOHEAL_WEBHOOK_ACTION_ALLOW")
    match = next((prefix for prefix in operator_prefixes if prefix.allows(url)), None)
    if match is None:
        raise NotPermitted(
            f"the URL {url} is not allow-listed: under no prefix of AUTOHEAL_WEBHOOK_ACTION_ALLOW (set by the operator)"
        )
    if policy is not None:
        policy_prefixes = parse_url_prefixes(policy, source="params.allow")
        if not any(prefix.allows(url) for prefix in policy_prefixes):
            raise NotPermitted(f"the URL {url} is not allow-listed: it is under no prefix of the policy's params.allow")
    return match


def command_program(program: str, *, allow: Iterable[str], path: str | None = None) -> str:
    """The absolute path that ``program`` (argv[0]) runs, if the operator allows it."""
    allowed = {os.path.normpath(entry) for entry in allow}
    if os.path.isabs(program):
        resolved = os.path.normpath(program)
    else:
        if "/" in program:
            raise NotPermitted(f"the program {program} must be an absolute path or a bare name")
        found = shutil.which(program, path=path)
        resolved = os.path.normpath(found) if found else ""
    if not resolved or resolved not in allowed:
        shown = f"{program} ({resolved})" if resolved and resolved != program else program
        raise NotPermitted(f"the program {shown} is not in AUTOHEAL_COMMAND_ALLOW (set by the operator)")
    return resolved


def secret_name(name: str, *, allow: Iterable[str]) -> str:
    """``name`` if the operator lets policies read that environment variable."""
    if name not in set(allow):
        raise NotPermitted(f"the environment variable {name} is not in AUTOHEAL_ACTION_SECRETS (set by the operator)")
    return name


# Beyond Python's is_global (the IANA special-purpose registries): addresses that carry or relay
# another address, so a "global" spelling can still reach an internal host. 6to4 (2002::/16 and its
# relay anycast 192.88.99.0/24), NAT64 (64:ff9b::/96 and the local-use 64:ff9b:1::/48) and the
# deprecated IPv4-compatible IPv6 addresses (::/96).
EXTRA_BLOCKED = tuple(
    ipaddress.ip_network(network)
    for network in ("192.88.99.0/24", "2002::/16", "64:ff9b::/96", "64:ff9b:1::/48", "::/96")
)


def address_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is a public Internet address a webhook may reach without an explicit IP prefix."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global:
        return False
    return not any(address in network for network in EXTRA_BLOCKED if network.version == address.version)
