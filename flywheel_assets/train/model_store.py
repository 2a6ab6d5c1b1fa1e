"""Versioned models on disk, saved with skops, and the champion pointer.

Layout: ``<models>/<version>/model.skops`` + ``card.json``; ``champion.json`` is a
pointer (version, when, why, previous) swapped atomically, never a copy of a model.
Loading refuses any artifact that contains a type a model of its card's name
(`training.model`) is not made of (:func:`allowed_types`).

``models`` is a `storage.Location` (settings ``models``: a folder or s3://…) or a path.
A version is written once, into the local folder and then uploaded; loading it reads
the local copy, downloaded when missing. The pointer and history are read from and
written to the location itself every time: in an object store, each is one object
replaced by one request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from flywheel_assets import storage
from flywheel_assets.storage import Location, as_location

Models = Location | str | os.PathLike

CHAMPION_POINTER = "champion.json"
# Versions in the order they went into service; a rollback steps back along it.
CHAMPION_HISTORY = "champion_history.json"
# A card without a model name is from before models were configurable: the default.
LEGACY_MODEL = "gradient_boosting"


class UntrustedModelError(RuntimeError):
    """A model artifact holds a type we do not allow to be loaded."""


class CorruptPointerError(RuntimeError):
    """The champion pointer is not a pointer to a model: nothing is served from it."""


def model_version(partition_date: str, fingerprint: str) -> str:
    """Versions are per training day plus a short hash of what the model learnt from,
    so a re-run on the same data gives the same version and a retrain on new data a
    new one."""
    return f"m{partition_date.replace('-', '')}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:8]}"


_atomic_write_bytes = storage._atomic_write_bytes


def has_model(models: Models, version: str) -> bool:
    """Whether ``version`` is saved: its model file locally (a version folder is moved
    into place whole); in an object store its card, which goes up after the model (a
    version copied into a bucket without a card does not count: give it one). A name
    that is not a version's has no model."""
    location = as_location(models)
    return is_version_name(version) and location.exists(
        f"{version}/{'card.json' if location.remote else 'model.skops'}")


# What a version looks like (`model_version`): one folder name, no path, none of the
# store's own files.
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RESERVED = {"champion.json", "champion_history.json", "champion.lock"}


def is_version_name(version: object) -> bool:
    return (isinstance(version, str) and _VERSION.fullmatch(version) is not None
            and version not in _RESERVED)


def _check_version(version: str) -> None:
    if not is_version_name(version):
        raise ValueError(f"{version!r} is not a model version (one folder name: letters, "
                         "digits, '.', '_', '-')")


def save_model(models: Models, version: str, pipeline, card: dict) -> Path:
    """Write model + card into a temporary folder, then move it into place at once
    (and, when the models are remote, upload them: the card last, so a card in the
    store vouches for a model that is there)."""
    import skops.io as sio

    _check_version(version)
    location = as_location(models)
    models_dir = location.cache
    final = models_dir / version
    # A version is written once: one already in the store (a re-run of the same data
    # on this machine or another) stays as it is, here and there.
    if location.remote and has_model(location, version):
        return final
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{version}."))
    try:
        sio.dump(pipeline, staging / "model.skops")
        (staging / "card.json").write_text(json.dumps({**card, "version": version}, indent=2,
                                                      default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    location.publish(version, last=("card.json",))
    return final


def load_model(models: Models, version: str, configured_model: str | None = None):
    """The model ``version``, loaded only if it contains nothing but the types a model
    of its card's name is made of. The card is as untrusted as the artifact: it may
    name a model the installation provides (built in or registered), or a dotted path
    only when that is ``configured_model`` (`training.model`), so a card never makes the
    loader import code nobody configured."""
    import skops.io as sio

    _check_version(version)
    location = as_location(models)
    if not has_model(location, version):
        raise FileNotFoundError(f"model {version}: no artifact at "
                                f"{location.where(f'{version}/model.skops')}")
    path = location.local_copy(f"{version}/model.skops")
    found = set(sio.get_untrusted_types(file=path))
    card_rel = f"{version}/card.json"
    card = (json.loads(location.local_copy(card_rel).read_text())
            if location.exists(card_rel) else {})
    name = card.get("model") or LEGACY_MODEL
    allowed = allowed_types(name, card.get("model_params") or {}, configured_model, version)
    refused = sorted(found - allowed)
    if refused:
        raise UntrustedModelError(
            f"model {version} at {location.where(f'{version}/model.skops')} contains types "
            f"that a {name!r} model is not made of: {refused}; refusing to load it")
    return sio.load(path, trusted=sorted(found))


def allowed_types(name: str, params: dict, configured_model: str | None = None,
                  version: str = "?") -> frozenset[str]:
    """The types a model named ``name`` (built with ``params``) may contain: exactly
    those a freshly fitted one of that model is made of (train/model.py,
    ``artifact_types``), no hand-kept list. Refused: a name that is neither provided by
    the installation nor the configured model, and a model that cannot be built."""
    from flywheel_assets.train import model as model_lib

    if not model_lib.registered(name) and name != configured_model:
        raise UntrustedModelError(
            f"model {version}: its card names {name!r}, which is neither a model this "
            f"installation provides nor training.model ({configured_model!r}); refusing "
            "to load it")
    try:
        return model_lib.artifact_types(name, json.dumps(params, sort_keys=True))
    except Exception as exc:  # noqa: BLE001 - any failure to build means: do not trust
        raise UntrustedModelError(f"model {version}: cannot tell what a {name!r} model is "
                                  f"made of ({type(exc).__name__}: {exc}); refusing to "
                                  "load it") from exc


def load_card(models: Models, version: str) -> dict:
    _check_version(version)
    return json.loads(as_location(models).local_copy(f"{version}/card.json").read_text())


def read_champion(models: Models, tolerate_corrupt: bool = False) -> dict | None:
    """The champion pointer, or None when no model has been promoted yet. A pointer that
    is not JSON, not an object with a ``version``, or names no saved model raises
    :class:`CorruptPointerError` (None with ``tolerate_corrupt``: what a promotion that
    repairs it reads)."""
    location = as_location(models)
    path = location.where(CHAMPION_POINTER)
    try:
        text = location.read_bytes(CHAMPION_POINTER)
    except FileNotFoundError:
        return None
    try:
        pointer = json.loads(text.decode())
        problem = (None if isinstance(pointer, dict) and is_version_name(pointer.get("version"))
                   else "not a JSON object with a version")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        pointer, problem = None, f"not JSON: {exc}"
    if problem is None and not has_model(location, pointer["version"]):
        problem = f"it names {pointer['version']!r}, which has no model in {location.where()}"
    if problem is None:
        return pointer
    if tolerate_corrupt:
        return None
    raise CorruptPointerError(
        f"{path} is not a champion pointer ({problem}); nothing is served from it. Put a "
        "model back in service with `flywheel promote --version <version> --reason ...` "
        f"(the versions promoted before are in {location.where(CHAMPION_HISTORY)} and "
        "ml.promotions)")


def champion_version(models: Models, tolerate_corrupt: bool = False) -> str | None:
    pointer = read_champion(models, tolerate_corrupt)
    return pointer["version"] if pointer else None


def champion_before(models: Models, version: str) -> str | None:
    """The champion that ``version`` competes with: the one in service, or, when
    ``version`` itself is in service (a re-run after its promotion), the one it
    replaced. Keeps re-runs comparing with the same model as the first run."""
    pointer = read_champion(models)
    if pointer is None:
        return None
    return pointer["previous"] if pointer["version"] == version else pointer["version"]


def champion_history(models: Models) -> list[str]:
    try:
        return json.loads(as_location(models).read_text(CHAMPION_HISTORY))
    except FileNotFoundError:
        return []


def set_champion(models: Models, version: str, reason: str, actor: str,
                 _history: list[str] | None = None) -> dict:
    """Point the champion at ``version`` (atomically) and return the new pointer."""
    location = as_location(models)
    if not has_model(location, version):  # a name that is not a version's included
        raise FileNotFoundError(f"cannot promote {version}: no such model in {location.where()}")
    previous = read_champion(location, tolerate_corrupt=True)
    history = _history if _history is not None else [
        *_history_to(location, previous["version"] if previous else None), version]
    # History first: a crash between the two writes leaves a history one step ahead of
    # the pointer, which `_history_to` cuts back, never a pointer without history.
    location.write_bytes(CHAMPION_HISTORY, json.dumps(history).encode())
    pointer = {
        "version": version,
        "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "reason": reason,
        "actor": actor,
        "previous": previous["version"] if previous else None,
    }
    location.write_bytes(CHAMPION_POINTER, json.dumps(pointer, indent=2).encode())
    return pointer


_LOCK_DEPTH: dict[str, int] = {}


@contextlib.contextmanager
def champion_lock(models: Models):
    """Hold the champion pointer while reading it and moving it: a gate and an operator
    (or two pods on one volume) never both read the same champion and both move it. A
    file lock (`fcntl`) on ``models_dir``'s `champion.lock`, taken once per process
    however deeply nested. On the embedded warehouse its one writer already kept them
    apart; a lake does not (its writers never wait), so this does. Across machines it is
    as good as the shared volume's locks; with the models in an object store, the lock
    is this machine's, and the gate's `duckdb` pool (one run at a time in the whole
    deployment) is what keeps two machines' gates apart (docs/deploy.md)."""
    import fcntl
    import threading

    models_dir = as_location(models).cache
    key = f"{Path(models_dir).resolve()}:{threading.get_ident()}"
    if _LOCK_DEPTH.get(key):
        _LOCK_DEPTH[key] += 1
        try:
            yield
        finally:
            _LOCK_DEPTH[key] -= 1
        return
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(models_dir) / "champion.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _LOCK_DEPTH[key] = 1
        try:
            yield
        finally:
            _LOCK_DEPTH.pop(key, None)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_or_none(location: Location, name: str) -> bytes | None:
    try:
        return location.read_bytes(name)
    except FileNotFoundError:
        return None


def pointer_files(models: Models) -> dict[str, bytes | None]:
    """The pointer and history files as they are (None: absent), to put back with
    :func:`restore_pointer_files` when what the move belonged to fails."""
    location = as_location(models)
    return {name: _read_or_none(location, name) for name in (CHAMPION_HISTORY, CHAMPION_POINTER)}


def restore_pointer_files(models: Models, saved: dict[str, bytes | None]) -> None:
    """Put the pointer and history back as :func:`pointer_files` read them (pointer
    first: the history ahead of it is cut back on read, never the reverse)."""
    location = as_location(models)
    for name in (CHAMPION_POINTER, CHAMPION_HISTORY):
        data = saved[name]
        if data is None:
            location.remove(name)
        elif _read_or_none(location, name) != data:
            location.write_bytes(name, data)


def rollback_target(models: Models) -> str:
    """The champion before the current one: what a rollback puts back in service."""
    history = _rollback_history(models)
    return history[-2]


def _history_to(models: Models, current: str | None) -> list[str]:
    """The champion history as it stands with ``current`` in service: entries a
    promotion wrote before it died (the history is written before the pointer) are cut
    back to the pointer's version; a pointer moved outside `set_champion` is appended.
    The pointer is what is in service: it is trusted over the history. No pointer at
    all: nothing was ever in service, whatever a promotion that died before writing its
    pointer left (a corrupt pointer, ``current`` None too, keeps the history)."""
    if not as_location(models).exists(CHAMPION_POINTER):
        return []
    history = champion_history(models)
    if current is None or (history and history[-1] == current):
        return history
    if current in history:
        return history[:len(history) - history[::-1].index(current)]
    return [*history, current]


def _rollback_history(models: Models) -> list[str]:
    current = champion_version(models)
    history = _history_to(models, current)
    if current is None or len(history) < 2:
        raise RuntimeError(f"nothing to roll back to: champion history is {history or 'empty'}")
    return history


def rollback_champion(models: Models, reason: str, actor: str) -> dict:
    """Put the champion before the current one back in service (atomically)."""
    history = _rollback_history(models)
    return set_champion(models, history[-2], reason, actor, _history=history[:-1])
