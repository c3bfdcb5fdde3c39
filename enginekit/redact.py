"""Credentials embedded in URLs (``scheme://user:password@host``): find, hide, and take out.

Secrets come from the standard environment (AWS chain, ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``,
Prefect's settings), never from a config value that ends up in MLflow params, deployment parameters, logs
or command output. ``redact`` hides any password in a text; ``split_credentials`` takes user and password
out of one URL so the rest can be stored and shown.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<password>[^/@\s]*)@")


def redact(text: str) -> str:
    """``text`` with every ``scheme://user:password@`` written as ``scheme://user:***@``."""
    return _USERINFO.sub(lambda match: f"{match['scheme']}{match['user']}:***@", text)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the URL without user and password, user, password); user and password None when absent."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return clean, user, password
