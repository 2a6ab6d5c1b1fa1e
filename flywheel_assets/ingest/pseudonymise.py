"""Keyed hashing of user ids: raw ids never enter the warehouse."""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable


def user_key(user_id: str, secret: str) -> str:
    """HMAC-SHA256 of ``user_id`` under ``secret``, as 24 hex characters (96 bits)."""
    digest = hmac.new(secret.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()
    return "u_" + digest[:24]


def key_map(user_ids: Iterable[str], secret: str) -> dict[str, str]:
    return {u: user_key(u, secret) for u in user_ids}
