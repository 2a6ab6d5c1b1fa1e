"""Operator actions on the model in service, audited in ``ml.promotions``.

``promote`` puts any registered, safely loadable version in service (an override of
the gate); ``rollback`` goes back to the champion before the current one. Both record
who, when and why. The serving policy reads the pointer on every request batch, so the
next slate uses the new champion.
"""

from __future__ import annotations

import datetime as dt
import json

from flywheel_assets.core import model_store, warehouse
from flywheel_assets.settings import Settings


def _audit(settings: Settings, candidate: str | None, previous: str | None, new: str,
           actor: str, reason: str) -> None:
    with warehouse.connect(settings.warehouse_path) as conn, warehouse.transaction(conn):
        conn.execute("INSERT INTO ml.promotions VALUES (?, NULL, ?, ?, ?, TRUE, ?, ?)",
                     [dt.datetime.now(dt.timezone.utc), candidate, previous, new, actor,
                      json.dumps([reason])])


def promote(settings: Settings, version: str, reason: str, actor: str) -> dict:
    """Override: put ``version`` in service. Refuses a model that does not load safely."""
    if not reason.strip():
        raise ValueError("a promotion needs a reason (--reason)")
    model_store.load_model(settings.models_dir, version)  # missing or tampered: refused here
    previous = model_store.champion_version(settings.models_dir)
    pointer = model_store.set_champion(settings.models_dir, version, f"override: {reason}", actor)
    _audit(settings, version, previous, version, actor, f"override: {reason}")
    return pointer


def rollback(settings: Settings, reason: str, actor: str) -> dict:
    """Put the previous champion back in service."""
    if not reason.strip():
        raise ValueError("a rollback needs a reason (--reason)")
    previous = model_store.champion_version(settings.models_dir)
    pointer = model_store.rollback_champion(settings.models_dir, f"rollback: {reason}", actor)
    model_store.load_model(settings.models_dir, pointer["version"])  # still loads safely
    _audit(settings, None, previous, pointer["version"], actor, f"rollback: {reason}")
    return pointer
