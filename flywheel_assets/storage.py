"""Where the product's files live: a local folder, or a prefix in an object store.

Three areas take a location by configuration (settings ``landing_uri``, ``models_uri``,
``reports_uri``): a path or ``file://`` URI (a folder, perhaps a shared volume) or
``s3://bucket/prefix`` (AWS S3 or an S3-compatible server: ``FLYWHEEL_S3_ENDPOINT``, the
AWS_* keys, as for the warehouse). The event datasets are the warehouse's (a DuckLake's
Parquet files under ``FLYWHEEL_WAREHOUSE_DATA``, see warehouse.py).

A :class:`Location` is read and written through pyarrow's filesystems. Code that needs a
file on disk (skops loads a path, DuckDB reads a landing day, Evidently writes HTML) works
on a local copy: ``cache`` is the folder for it (the location itself when it is local),
and a remote location is brought up to date with :meth:`Location.publish` (upload, a
folder's files in order, its marker last) and :meth:`Location.local_copy` /
:meth:`Location.fetch` (download). What each area keeps where:

- landing: the producers' folders ``<stream>/date=<day>/`` with their ``_SUCCESS``
  markers. The sensor lists them in the store; ingestion reads a fresh copy of the day
  (:func:`landing_day_copy`), so rows read are counted from the files as landed.
- models: ``<version>/model.skops`` + ``card.json`` (immutable: a version is written
  once and cached by size and time) and the champion pointer and history (mutable:
  always read from the store). Every object is uploaded under a hidden key and copied
  into place by the store in one request: a reader sees the old object or the new one,
  never half, and an upload cut short leaves no object under the real name.
- reports: the evaluation and drift reports, written locally and then uploaded; the
  warehouse records their location (the URI when remote).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

SCHEMES = ("file", "s3")


class StorageConfigError(ValueError):
    """A location the product cannot use (an unknown scheme, an s3:// without a bucket)."""


@dataclass(frozen=True)
class S3Options:
    endpoint: str = ""  # host:port of an S3-compatible server; empty: AWS
    use_ssl: bool = True
    access_key: str = ""
    secret_key: str = ""
    region: str = ""
    session_token: str = ""

    @classmethod
    def from_env(cls, endpoint: str = "", use_ssl: bool = True) -> "S3Options":
        """The AWS_* variables; without keys, the AWS SDK's own chain (a pod's web
        identity, an instance profile, ~/.aws) finds the credentials."""
        return cls(endpoint.strip(), use_ssl, os.environ.get("AWS_ACCESS_KEY_ID", ""),
                   os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                   os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", ""),
                   os.environ.get("AWS_SESSION_TOKEN", ""))

    def filesystem(self):
        from pyarrow import fs

        kwargs: dict = {"allow_bucket_creation": False, "allow_bucket_deletion": False}
        if self.access_key:
            kwargs.update(access_key=self.access_key, secret_key=self.secret_key)
            if self.session_token:
                kwargs["session_token"] = self.session_token
        if self.region:
            kwargs["region"] = self.region
        if self.endpoint:
            kwargs.update(endpoint_override=self.endpoint,
                          scheme="https" if self.use_ssl else "http")
        return fs.S3FileSystem(**kwargs)


def local_path(uri: str, base: Path | None = None) -> Path | None:
    """The folder a location names when it is local (a path, a relative one under
    ``base`` when given, or a file:// URI); None when it is in an object store."""
    scheme = urlparse(uri).scheme if "://" in uri else ""
    if scheme == "file":
        host = urlparse(uri).netloc
        if host not in ("", "localhost"):
            raise StorageConfigError(
                f"{uri!r}: a file:// location is a folder on this machine (file:///path); "
                f"{host!r} is another host: mount it and name the folder")
        return Path(unquote(urlparse(uri).path))
    if scheme:
        if scheme not in SCHEMES:
            raise StorageConfigError(
                f"{uri!r}: a location is a folder, file:///… or s3://bucket/prefix; "
                f"{scheme}:// is not supported")
        return None
    path = Path(uri).expanduser()
    return base / path if base is not None and not path.is_absolute() else path


class Location:
    """A folder: ``uri`` as configured, read and written by relative names ("a/b.json").
    Local: ``cache`` is the folder itself and every method is a file operation. Remote:
    ``cache`` is this machine's working copy of what it read or wrote."""

    def __init__(self, uri: str, cache: Path, s3: S3Options | None = None,
                 base: Path | None = None):
        self.uri = uri.rstrip("/") if "://" in uri else uri
        folder = local_path(uri, base)
        self.remote = folder is None
        self.cache = Path(cache) if self.remote else folder
        if self.remote:
            parsed = urlparse(uri)
            if not parsed.netloc:
                raise StorageConfigError(f"{uri!r}: an s3:// location needs a bucket "
                                         "(s3://bucket/prefix)")
            self._root = f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")
            self._fs = (s3 or S3Options.from_env()).filesystem()

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def __str__(self) -> str:
        return self.uri if self.remote else str(self.cache)

    def where(self, rel: str = "") -> str:
        """What to show a person (and record in the warehouse) for ``rel``: a path, or
        the object's URI."""
        rel = rel.strip("/")
        if not self.remote:
            return str(self.cache / rel) if rel else str(self.cache)
        return f"{self.uri}/{rel}" if rel else self.uri

    def named(self, text: str, copy: Path | None) -> str:
        """``text`` with the paths of a working copy of this location (``copy``, e.g.
        a landing day's) written as the location's own."""
        if not self.remote or copy is None:
            return text
        return text.replace(str(copy).rstrip("/"), self.uri)

    def _key(self, rel: str) -> str:
        rel = rel.strip("/")
        return f"{self._root}/{rel}" if rel else self._root

    def _info(self, rel: str):
        from pyarrow import fs

        info = self._fs.get_file_info(self._key(rel))
        return None if info.type == fs.FileType.NotFound else info

    # --- reading -------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        if not self.remote:
            return (self.cache / rel).exists()
        return self._info(rel) is not None

    def is_dir(self, rel: str = "") -> bool:
        if not self.remote:
            return (self.cache / rel).is_dir()
        from pyarrow import fs

        info = self._info(rel)
        return info is not None and info.type == fs.FileType.Directory

    def mtime(self, rel: str) -> float:
        """When ``rel`` was last written, in seconds since the epoch."""
        if not self.remote:
            return (self.cache / rel).stat().st_mtime
        info = self._info(rel)
        if info is None:
            raise FileNotFoundError(self.where(rel))
        return info.mtime.timestamp()

    def list(self, rel: str = "") -> list[str]:
        """Names directly under ``rel`` (files and folders), sorted; [] when absent.
        Hidden names (a staging folder, an upload in progress) are not listed."""
        if not self.remote:
            folder = self.cache / rel
            names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        else:
            from pyarrow import fs

            selector = fs.FileSelector(self._key(rel), allow_not_found=True, recursive=False)
            names = [Path(i.path).name for i in self._fs.get_file_info(selector)]
        return sorted(n for n in names if not n.startswith("."))

    def stamps(self, rel: str, name: str) -> dict[str, float]:
        """``{folder: mtime}`` for each folder directly under ``rel`` that holds a file
        ``name`` (a `_SUCCESS` marker): one listing, however many folders (remotely one
        recursive listing of ``rel``, not a request per folder). A folder removed while
        it is read is left out."""
        found: dict[str, float] = {}
        if not self.remote:
            for marker in (self.cache / rel).glob(f"*/{name}"):
                with contextlib.suppress(FileNotFoundError):
                    found[marker.parent.name] = marker.stat().st_mtime
            return found
        from pyarrow import fs

        prefix = self._key(rel) + "/"
        selector = fs.FileSelector(self._key(rel), allow_not_found=True, recursive=True)
        for info in self._fs.get_file_info(selector):
            parts = info.path.removeprefix(prefix).split("/")
            if info.type == fs.FileType.File and len(parts) == 2 and parts[1] == name:
                found[parts[0]] = info.mtime.timestamp()
        return found

    def read_bytes(self, rel: str) -> bytes:
        if not self.remote:
            return (self.cache / rel).read_bytes()
        if self._info(rel) is None:
            raise FileNotFoundError(self.where(rel))
        with self._fs.open_input_stream(self._key(rel), compression=None) as stream:
            return stream.read()

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    # --- writing -------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` at once: a reader sees the old content or the new, never part
        (locally a temporary file moved into place; remotely one upload, which an object
        store makes visible only when complete)."""
        if not self.remote:
            _atomic_write_bytes(self.cache / rel, data)
            return
        self._upload(self._key(rel), io.BytesIO(data))

    def remove(self, rel: str) -> None:
        """Delete the file ``rel`` if it is there."""
        if not self.remote:
            (self.cache / rel).unlink(missing_ok=True)
        elif self._info(rel) is not None:
            self._fs.delete_file(self._key(rel))

    def publish(self, *rels: str, last: tuple[str, ...] = (), replace: bool = False) -> None:
        """Upload the working copy's ``rels`` (files, or folders' files in name order,
        those named in ``last`` after all the others: a marker or a card goes up only
        when what it vouches for is there). ``replace``: a folder's objects in the store
        are deleted first, so it holds exactly the working copy's files (a re-landed day
        loses its marker before its files change). Nothing to do for a local location."""
        if not self.remote:
            return
        files = []
        for rel in rels:
            source = self.cache / rel
            if source.is_dir() and replace:
                self._fs.delete_dir_contents(self._key(rel), missing_dir_ok=True)
            files += [source] if source.is_file() else [
                p for p in source.rglob("*") if p.is_file() and not p.name.startswith(".")]
        for path in sorted(files, key=lambda p: (p.name in last, str(p))):
            key = self._key(str(path.relative_to(self.cache)))
            with open(path, "rb") as fh:
                self._upload(key, fh)
            # The working copy takes the object's time, so local_copy knows it current.
            stamp = self._fs.get_file_info(key).mtime.timestamp()
            os.utime(path, (stamp, stamp))

    def _upload(self, key: str, source) -> None:
        """Write ``source`` (a binary file) to ``key`` so that the key only ever holds a
        complete object: uploaded under a hidden key of this location, then copied into
        place by the store (one request) and the hidden key deleted. pyarrow completes
        an upload when its stream closes, even on an exception, so an upload cut short
        (an error, Ctrl-C, a stopped pod) leaves at most a hidden `.uploads/` object,
        never a short model or marker under its real name."""
        staging = f"{self._root}/.uploads/{uuid.uuid4().hex}"
        try:
            with self._fs.open_output_stream(staging, compression=None) as out:
                shutil.copyfileobj(source, out, 1 << 20)
            self._fs.copy_file(staging, key)
        finally:
            with contextlib.suppress(OSError):
                self._fs.delete_file(staging)

    def local_copy(self, rel: str) -> Path:
        """A file on this machine with ``rel``'s content: the file itself when local;
        remotely the working copy, downloaded when it is missing or differs from the
        object in size or time (for files written once, such as a model version)."""
        path = self.cache / rel
        if not self.remote:
            return path
        info = self._info(rel)
        if info is None:
            raise FileNotFoundError(self.where(rel))
        stamp = info.mtime.timestamp()
        if path.is_file() and path.stat().st_size == info.size and path.stat().st_mtime == stamp:
            return path
        self._download(self._key(rel), path)
        os.utime(path, (stamp, stamp))
        return path

    def fetch(self, rel: str, dest: Path) -> list[Path]:
        """Download the folder ``rel`` (recursively) into ``dest``; the files written."""
        if not self.remote:
            raise ValueError("fetch is for remote locations: read a local one in place")
        from pyarrow import fs

        selector = fs.FileSelector(self._key(rel), allow_not_found=True, recursive=True)
        prefix = self._key(rel) + "/"
        keys = sorted(i.path for i in self._fs.get_file_info(selector)
                      if i.type == fs.FileType.File)
        for key in keys:  # all checked before anything is written
            name = key.removeprefix(prefix)
            if any(part in ("", ".", "..") for part in name.split("/")):
                raise StorageConfigError(
                    f"{self.uri}/{rel}/{name}: an object whose name is not a file's path "
                    "(an empty, '.' or '..' part); refusing to copy it to this machine")
        written = []
        for key in keys:
            target = dest / key.removeprefix(prefix)
            self._download(key, target)
            written.append(target)
        return written

    def _download(self, key: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
        try:
            with self._fs.open_input_stream(key, compression=None) as stream, open(tmp, "wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


def as_location(where: "Location | str | os.PathLike") -> Location:
    """A Location as given, or a local one for a path (what tests and tools pass)."""
    if isinstance(where, Location):
        return where
    if "://" in str(where) and not str(where).startswith("file://"):
        raise StorageConfigError(f"{where!r}: a remote location needs its settings; pass a "
                                 "Location (Settings.models, .landing, .reports)")
    path = local_path(str(where)) if str(where).startswith("file://") else Path(where)
    return Location(str(path), path)


def publish_landing_day(landing: Location, partition_date: str) -> None:
    """Upload a day written into the landing zone's working copy (what the simulator
    does; a producer writes the store directly): every stream's files, then the
    streams' `_SUCCESS` markers, each day folder replaced as a whole."""
    if landing.remote:
        folders = sorted(p for p in landing.cache.glob(f"*/date={partition_date}") if p.is_dir())
        landing.publish(*(str(p.relative_to(landing.cache)) for p in folders),
                        last=("_SUCCESS",), replace=True)


@contextlib.contextmanager
def landing_day_copy(landing: Location, partition_date: str, scratch: Path):
    """The landing folder to ingest ``partition_date`` from: the landing zone itself when
    local; otherwise a fresh copy of that day's folder in every stream, downloaded into a
    temporary folder under ``scratch`` and removed afterwards (what ingestion reads is
    what the store holds now, and nothing is left behind)."""
    if not landing.remote:
        yield landing.cache
        return
    scratch.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(dir=scratch, prefix=f"landing-{partition_date}-"))
    try:
        for stream in landing.list():
            day = f"{stream}/date={partition_date}"
            if landing.is_dir(day):
                landing.fetch(day, root / day)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        # A write that failed (a full disk, a crash of the call) leaves the old file.
        if os.path.exists(tmp):
            os.unlink(tmp)
