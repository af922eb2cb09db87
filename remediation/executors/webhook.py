"""webhook: an HTTP POST to an allow-listed URL, never following redirects.

Parameters: ``url`` (required), ``headers`` (optional: a value is a literal string, or
``{"env": "NAME"}`` to read a secret from the worker's environment, one of the names the operator
listed in ``AUTOHEAL_ACTION_SECRETS``; header values are never logged or audited),
``timeout_seconds`` and ``allow`` (URL prefixes that narrow the operator's
``AUTOHEAL_WEBHOOK_ACTION_ALLOW`` for this policy; they never widen it).

The URL must be under a prefix of the operator's allow-list (parsed: scheme, host, port, path; see
remediation/trust.py). Its host is resolved once and every address is checked: anything that is
not a public Internet address (``remediation.trust.address_is_public``) is refused unless the
operator's matching prefix names that very address as an IP literal (an explicit decision). For
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
from remediation.trust import NotPermitted, UrlPrefix, address_is_public, secret_name, webhook_prefix

BODY_LIMIT = 2048
DEFAULT_TIMEOUT = 10.0
_HEADER_NAME_OK = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _allowed_prefix(spec: JobSpec, url: str) -> UrlPrefix:
    narrowing = spec.params.get("allow")
    if narrowing is not None and (
        not isinstance(narrowing, list) or not all(isinstance(p, str) and p for p in narrowing)
    ):
        raise NotAllowed("params.allow must be a list of URL prefixes")
    try:
        return webhook_prefix(url, operator=settings.AUTOHEAL_WEBHOOK_ACTION_ALLOW, policy=narrowing)
    except ValueError as exc:
        raise NotAllowed(str(exc)) from None


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


def resolve_checked(url: str, prefix: UrlPrefix) -> str:
    """Resolve the URL's host and return the address to connect to, or raise NotAllowed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise NotAllowed(f"the webhook host {host} does not resolve") from None
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    explicit = prefix.literal_address
    for address in addresses:
        if not address_is_public(address) and address != explicit:
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
            try:
                secret_name(value["env"], allow=settings.AUTOHEAL_ACTION_SECRETS)
            except NotPermitted as exc:
                raise NotAllowed(f"params.headers.{name}: {exc}") from None
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
    resolve_checked(url, _allowed_prefix(spec, url))
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
    address = resolve_checked(url, _allowed_prefix(spec, url))
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
