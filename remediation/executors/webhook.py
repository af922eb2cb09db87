"""webhook: an HTTP POST to an allow-listed URL, never following redirects.

Parameters: ``url`` (required), ``headers`` (optional: a value is a literal string, or
``{"env": "NAME"}`` to read a secret from the worker's environment; header values are never logged
or audited), ``timeout_seconds`` and ``allow`` (URL prefixes this policy may call, in addition to
settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW).

The URL must start with an allow-listed prefix. Its host is resolved once and every address is
checked: loopback, link-local, private, reserved and multicast addresses are refused unless the
matching allow-list prefix names that very address as an IP literal (an explicit decision). For
plain HTTP the request then goes to the checked address (the Host header keeps the name), so a DNS
answer that changes between the check and the request cannot redirect it. For HTTPS the name is
kept for certificate verification, which a rebinding attacker cannot satisfy.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from django.conf import settings

from remediation.executors import ExecResult, JobSpec, NotAllowed, timeout_for, truncate

BODY_LIMIT = 2048
DEFAULT_TIMEOUT = 10.0
_HEADER_NAME_OK = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _allow_list(spec: JobSpec) -> list[str]:
    extra = spec.params.get("allow", [])
    if not isinstance(extra, list) or not all(isinstance(p, str) and p for p in extra):
        raise NotAllowed("params.allow must be a list of URL prefixes")
    return [*settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW, *extra]


def _url(spec: JobSpec) -> str:
    url = spec.params.get("url")
    if not isinstance(url, str) or not url:
        raise NotAllowed("params.url is required for a webhook action")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotAllowed("params.url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise NotAllowed("params.url must not carry credentials; use params.headers with an env reference")
    return url


def _matching_prefix(url: str, allow: list[str]) -> str:
    for prefix in allow:
        if url.startswith(prefix):
            return prefix
    raise NotAllowed("params.url is not allow-listed (AUTOHEAL_WEBHOOK_ACTION_ALLOW or params.allow)")


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def _literal_host(prefix: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host = urlsplit(prefix).hostname
    try:
        return ipaddress.ip_address(host) if host else None
    except ValueError:
        return None


def resolve_checked(url: str, prefix: str) -> str:
    """Resolve the URL's host and return the address to connect to, or raise NotAllowed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise NotAllowed(f"the webhook host {host} does not resolve") from None
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    explicit = _literal_host(prefix)
    for address in addresses:
        if _is_internal(address) and address != explicit:
            raise NotAllowed(
                f"the webhook host {host} resolves to the internal address {address}; "
                "only an allow-list prefix naming that IP literal permits it"
            )
    return str(sorted(addresses, key=str)[0])


def _headers(spec: JobSpec) -> dict[str, str]:
    raw = spec.params.get("headers", {})
    if not isinstance(raw, dict):
        raise NotAllowed("params.headers must be a mapping of header names to values")
    headers: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not name or not set(name) <= _HEADER_NAME_OK:
            raise NotAllowed(f"params.headers has an invalid header name {name!r}")
        if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
            secret = os.environ.get(value["env"])
            if secret is None:
                raise NotAllowed(
                    f"params.headers.{name} names the environment variable {value['env']}, which is not set"
                )
            headers[name] = secret
        elif isinstance(value, str):
            headers[name] = value
        else:
            raise NotAllowed(f"params.headers.{name} must be a string or {{'env': 'NAME'}}")
        if "\n" in headers[name] or "\r" in headers[name]:
            raise NotAllowed(f"params.headers.{name} contains a line break")
    return headers


def check(spec: JobSpec) -> None:
    """Validate the URL against the allow-list and the resolved addresses, and the headers."""
    url = _url(spec)
    resolve_checked(url, _matching_prefix(url, _allow_list(spec)))
    _headers(spec)
    timeout_for(spec, default=DEFAULT_TIMEOUT)


def _body(spec: JobSpec) -> dict[str, Any]:
    return {
        "action": "webhook",
        "job": spec.job_id,
        "alertname": spec.alertname,
        "fingerprint": spec.fingerprint,
        "target": spec.target,
        "labels": spec.labels,
    }


def execute(spec: JobSpec, *, timeout: float) -> ExecResult:
    """POST the incident as JSON; 2xx is success, 5xx and network errors may be retried."""
    url = _url(spec)
    address = resolve_checked(url, _matching_prefix(url, _allow_list(spec)))
    headers = _headers(spec)
    parts = urlsplit(url)
    target_url = url
    if parts.scheme == "http":
        # Connect to the address that was checked, not to a second DNS answer.
        netloc = f"[{address}]" if ":" in address else address
        if parts.port:
            netloc += f":{parts.port}"
        target_url = urlunsplit(("http", netloc, parts.path, parts.query, ""))
        headers.setdefault("Host", parts.netloc)
    try:
        response = requests.post(target_url, json=_body(spec), headers=headers, timeout=timeout, allow_redirects=False)
    except requests.exceptions.ConnectTimeout:
        return ExecResult(ok=False, transient=True, detail="connection timed out")
    except requests.exceptions.Timeout:
        return ExecResult(ok=False, detail=f"no answer within {timeout:g}s; the call may have had an effect")
    except requests.exceptions.ConnectionError:
        return ExecResult(ok=False, transient=True, detail="connection failed")
    output = {"status": response.status_code, "body": truncate(response.text, BODY_LIMIT)}
    if 300 <= response.status_code < 400:
        location = truncate(response.headers.get("Location", ""), 200)
        output["location"] = location
        return ExecResult(
            ok=False, detail=f"answered {response.status_code} redirect to {location}: not followed", output=output
        )
    if response.status_code >= 500:
        return ExecResult(ok=False, transient=True, detail=f"answered {response.status_code}", output=output)
    if response.status_code >= 400:
        return ExecResult(ok=False, detail=f"answered {response.status_code}", output=output)
    return ExecResult(ok=True, detail=f"answered {response.status_code}", output=output)
