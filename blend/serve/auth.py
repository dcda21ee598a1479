"""Optional API keys: `BLEND_API_KEYS="alice:KEY1,bob:KEY2"` (or bare keys), or a file of such lines.

With keys, every /v1 request needs `Authorization: Bearer KEY` (or `X-API-Key: KEY`) and its user is the key's
name. Without keys, a user is a session: the `X-Session-Id` a client sends back, or a new one the server issues.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def parse_keys(text: str) -> dict[str, str]:
    """'user:key' or 'key' items separated by commas or newlines -> {key: user}."""
    out = {}
    for item in re.split(r"[,\n]", text or ""):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        user, sep, key = item.partition(":")
        if not sep:
            user, key = "key-" + hashlib.sha256(item.encode()).hexdigest()[:12], item
        if len(key) < 8:
            raise ValueError("API keys must be at least 8 characters long")
        out[key.strip()] = user.strip()
    return out


def load_keys(keys: str = "", keys_file: str = "") -> dict[str, str]:
    text = keys or ""
    if keys_file:
        text += "\n" + Path(keys_file).read_text(encoding="utf-8")
    return parse_keys(text)


def user_for_key(keys: dict[str, str], given: str | None) -> str | None:
    """The user of a presented key (compared in constant time), or None."""
    if not given:
        return None
    found = None
    for key, user in keys.items():
        if hmac.compare_digest(key.encode(), given.encode()):
            found = user
    return found


def presented_key(headers) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key")


def session_for(headers) -> tuple[str, bool]:
    """(session id, whether it is new): the client's X-Session-Id when well-formed, else a fresh one."""
    sid = headers.get("x-session-id", "")
    if SESSION_RE.match(sid):
        return sid, False
    return secrets.token_urlsafe(18), True


def is_local(host: str) -> bool:
    return host in LOCAL_HOSTS
