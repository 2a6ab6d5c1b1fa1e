"""Label Studio as the labelling tool: start it, push the day's queue, pull the labels.

The outbox (`outbox.py`) writes each day's queue as Label Studio import JSON; the inbox
(`inbox.py`, `labels.py`) reads Label Studio exports. This module moves them over
Label Studio's HTTP API, so nobody has to drag files through a browser:

    export LABEL_STUDIO_TOKEN=...            # your own secret, 6-40 characters
    make label-studio                        # terminal 1: the server, 127.0.0.1:8080
    flywheel label-studio push --date 2026-01-05
    ... people label in the browser (the least certain guesses first) ...
    flywheel label-studio pull

`push` creates (or reuses) the project "flywheel relevance" with the outbox's labelling
interface, imports `data/labeling/outbox/<date>/tasks.json` (the champion's guess comes
along as a prediction, its confidence as the score) and switches on uncertainty
sampling; tasks already in the project (same `task_key`) are not imported twice.
`pull` writes the project's export into `data/labeling/inbox/`, where the next
rotation's `human_labels` imports it. An export holds every annotation so far, so
pulling again repeats earlier ones; the import quarantines those repeats as duplicates
(same annotator, same task), it never counts them twice.

In a JSON export the annotator is Label Studio's user id (1 is the admin); the task's
data holds only the queue's fields, whose `user_key` is a pseudonym, never a raw id.

Label Studio lives in its own venv (`.venv-label-studio`, `make label-studio-install`):
its dependencies clash with ours. The client here uses the standard library only. The
API token is read from the environment (`LABEL_STUDIO_TOKEN`), never from a file or
the code; Label Studio takes it as the admin's token when it first creates its data
directory (`$FLYWHEEL_DATA_DIR/label_studio`), so a later start with another token
cannot log in: use the first one, or start over with an empty directory. The server
listens on 127.0.0.1 only and sends nothing out (no version check, telemetry or
Sentry).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from flywheel_assets.label import outbox

PROJECT_TITLE = "flywheel relevance"
DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_PORT = 8080
DEFAULT_USERNAME = "admin@example.com"
TOKEN_ENV = "LABEL_STUDIO_TOKEN"
# The repository's Label Studio venv (`make label-studio-install`).
DEFAULT_VENV = Path(__file__).resolve().parents[2] / ".venv-label-studio"
EXPORT_TYPES = {"JSON": "json", "JSON_MIN": "json", "CSV": "csv"}
LOG_NAME = "label_studio.log"


class LabelStudioError(RuntimeError):
    """Label Studio did not start, or answered an API call with an error."""


class LabelStudio:
    """A small client for Label Studio's HTTP API (tested with 1.23.2).

    ``token`` is the legacy API token (``Authorization: Token <token>``), which the
    server accepts when it was first started with ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN``
    (``start_server`` does that)."""

    def __init__(self, url: str, token: str, timeout: float = 120.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # the token stays out of logs and tracebacks
        return f"LabelStudio({self.url!r})"

    def request(self, method: str, path: str, body=None, auth: bool = True) -> bytes:
        """One API call; returns the response body, raises `LabelStudioError` on an
        HTTP error status (with the start of the server's answer)."""
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Token {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body, default=str).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            detail = error.read()[:400].decode("utf-8", "replace")
            hint = (" (is LABEL_STUDIO_TOKEN the token this Label Studio data directory was "
                    "first started with?)" if error.code == 401 else "")
            raise LabelStudioError(f"{method} {path}: HTTP {error.code}{hint}: {detail}") from None

    def call(self, method: str, path: str, body=None, auth: bool = True):
        """`request`, with the answer decoded from JSON (None for an empty body)."""
        payload = self.request(method, path, body, auth)
        return json.loads(payload) if payload else None

    def wait_ready(self, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> dict:
        """Wait until the server answers ``GET /api/version`` (no auth needed), then check
        the token works; returns the version record. With ``proc`` (from `start_server`),
        fail at once when that process exits, or when it listens on another port than
        it was given (Label Studio moves to the next port when its port is taken)."""
        deadline = time.monotonic() + timeout
        while True:
            if proc is not None and proc.poll() is not None:
                raise LabelStudioError(f"Label Studio exited with code {proc.returncode}; "
                                       f"log {getattr(proc, 'log_path', '?')}:\n{_tail(proc)}")
            try:
                version = self.call("GET", "/api/version", auth=False)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, LabelStudioError,
                    json.JSONDecodeError):
                pass
            if time.monotonic() > deadline:
                raise LabelStudioError(f"Label Studio at {self.url} did not answer within "
                                       f"{timeout:.0f} s" + (f":\n{_tail(proc)}" if proc else ""))
            time.sleep(0.5)
        if proc is not None:
            served = served_port(proc)
            if served is not None and served != getattr(proc, "port", served):
                raise LabelStudioError(f"Label Studio moved to port {served} (port "
                                       f"{proc.port} was taken)")
        self.whoami()
        return version

    def whoami(self) -> dict:
        """The user the token belongs to (raises on a token the server does not know)."""
        return self.call("GET", "/api/current-user/whoami")

    def projects(self) -> list[dict]:
        """Every project this user can see."""
        out, page = [], 1
        while True:
            answer = self.call("GET", f"/api/projects/?page={page}&page_size=100")
            if isinstance(answer, list):  # older servers do not paginate
                return answer
            out += answer.get("results", [])
            if not answer.get("next"):
                return out
            page += 1

    def create_project(self, title: str, label_config: str) -> int:
        """The id of the project called ``title``: the existing one when there is one
        (its labelling interface is left as it is), else a new one."""
        for project in self.projects():
            if project.get("title") == title:
                return int(project["id"])
        # Blind labelling: annotators do not see the champion's guess (its score still
        # orders the tasks by uncertainty sampling), so gold labels are not anchored to it.
        created = self.call("POST", "/api/projects/", {"title": title, "label_config": label_config,
                                                       "show_collab_predictions": False})
        return int(created["id"])

    def tasks(self, project_id: int) -> list[dict]:
        """Every task of a project (id, data, ...)."""
        out, page = [], 1
        while True:
            try:
                answer = self.call("GET", f"/api/tasks/?project={project_id}&page={page}"
                                          f"&page_size=500&fields=all")
            except LabelStudioError as error:
                if "HTTP 404" in str(error) and page > 1:  # past the last page
                    return out
                raise
            batch = answer.get("tasks", []) if isinstance(answer, dict) else answer
            out += batch
            total = answer.get("total", len(out)) if isinstance(answer, dict) else len(out)
            if not batch or len(out) >= total:
                return out
            page += 1

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Import tasks (Label Studio import JSON, predictions included); returns the
        new tasks' ids in the order given."""
        if not tasks:
            return []
        answer = self.call("POST", f"/api/projects/{project_id}/import?return_task_ids=true", tasks)
        ids = [int(i) for i in answer.get("task_ids") or []]
        if len(ids) != len(tasks):
            raise LabelStudioError(f"imported {len(tasks)} tasks, Label Studio reports "
                                   f"{answer.get('task_count')} ({len(ids)} ids)")
        return ids

    def set_uncertainty_sampling(self, project_id: int) -> None:
        """Show annotators the tasks whose prediction score (the champion's confidence)
        is lowest first."""
        self.call("PATCH", f"/api/projects/{project_id}/", {"sampling": "Uncertainty sampling"})

    def create_user(self, email: str) -> int:
        """A user (an annotator without a password, so without a login) by email;
        returns the id annotations name in ``completed_by``."""
        name = email.split("@")[0]
        created = self.call("POST", "/api/users/", {"email": email, "username": name,
                                                    "first_name": name, "last_name": ""})
        return int(created["id"])

    def annotate(self, task_id: int, grade: int | None, completed_by: int | None = None,
                 cancelled: bool = False, lead_time: float | None = None) -> dict:
        """Post one annotation as the labelling interface does: the grade as the
        choice of the outbox's control, or a cancelled (skipped) one. ``completed_by``
        posts it in another user's name (default: the token's user)."""
        if cancelled:
            body = {"result": [], "was_cancelled": True}
        else:
            body = {"result": [{"from_name": outbox.CONTROL_NAME, "to_name": "text",
                                "type": "choices", "value": {"choices": [str(int(grade))]}}]}
        if lead_time is not None:
            body["lead_time"] = lead_time
        if completed_by is not None:
            body["completed_by"] = int(completed_by)
        return self.call("POST", f"/api/tasks/{task_id}/annotations/", body)

    def export(self, project_id: int, export_type: str = "JSON") -> str:
        """A project's export as text: ``JSON`` (tasks with their annotations, cancelled
        ones included), ``JSON_MIN`` or ``CSV`` (one row per annotation that was not
        cancelled)."""
        if export_type not in EXPORT_TYPES:
            raise ValueError(f"export type {export_type!r}: one of {', '.join(EXPORT_TYPES)}")
        query = urllib.parse.urlencode({"exportType": export_type})
        return self.request("GET", f"/api/projects/{project_id}/export?{query}").decode("utf-8")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_taken(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _tail(proc, lines: int = 30) -> str:
    try:
        text = Path(proc.log_path).read_text(errors="replace")
    except (OSError, AttributeError):
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def served_port(proc) -> int | None:
    """The port Label Studio says it serves on (its log's "Starting development server
    at ..." line), None before it says so."""
    try:
        text = Path(proc.log_path).read_text(errors="replace")
    except (OSError, AttributeError):
        return None
    found = re.findall(r"Starting development server at https?://[^:/\s]+:(\d+)/", text)
    return int(found[-1]) if found else None


def server_env(data_dir: Path, username: str, password: str, token: str) -> dict[str, str]:
    """The environment Label Studio runs with: our data directory and admin, legacy
    API tokens on, sign-up off, and no outbound traffic."""
    if not 6 <= len(token) <= 40:
        raise ValueError("the Label Studio token must be 6 to 40 characters long")
    env = dict(os.environ)
    # Label Studio falls back to unprefixed names (HOST, PORT, USERNAME, ...): drop the
    # ones that would silently change where it listens.
    for name in ("HOST", "PORT"):
        env.pop(name, None)
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": username,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        # `Authorization: Token <t>`; read only when the data directory is first set up.
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LATEST_VERSION_CHECK": "false",
        "SENTRY_DSN": "",
        "COLLECT_ANALYTICS": "false",
        "PYTHONUNBUFFERED": "1",  # the log shows the port line as soon as it is printed
    })
    return env


def start_server(venv_dir: Path, data_dir: Path, port: int, username: str, password: str,
                 token: str) -> subprocess.Popen:
    """Start ``label-studio start`` from ``venv_dir`` on 127.0.0.1:``port`` with its
    database in ``data_dir`` (created if missing), in its own process group, logging
    to ``data_dir/label_studio.log``. Returns at once: call `LabelStudio.wait_ready`
    with ``proc=`` (the first start of a data directory runs migrations, ~30 s; later
    starts take a few seconds). Stop it with `stop_server`."""
    executable = Path(venv_dir) / "bin" / "label-studio"
    if not executable.exists():
        raise FileNotFoundError(f"no Label Studio at {executable}: run `make label-studio-install`")
    if _port_taken(port):
        raise LabelStudioError(f"port {port} is already in use on 127.0.0.1")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    env = server_env(data_dir.resolve(), username, password, token)
    log_path = data_dir / LOG_NAME
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            [str(executable), "start", "--no-browser", "--internal-host", "127.0.0.1",
             "--port", str(port)],
            env=env, cwd=data_dir, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()  # the child keeps its own descriptor
    proc.log_path = log_path
    proc.port = port
    return proc


def stop_server(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop a server from `start_server`: SIGTERM to its process group, SIGKILL after
    ``timeout`` seconds; returns once the process is gone."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout)
    # Anything the server started in its group goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def push_queue(client: LabelStudio, labeling_dir: Path, date: str) -> dict:
    """Import the day's queue (``labeling_dir/outbox/<date>/tasks.json``) into the
    project "flywheel relevance" (created with the outbox's labelling interface if
    missing) and switch on uncertainty sampling. Tasks whose ``task_key`` the project
    already holds are skipped, so pushing a day twice imports it once. Returns
    ``{"project_id", "task_ids" (new tasks, in the queue's order), "skipped"}``."""
    path = Path(labeling_dir) / "outbox" / date / "tasks.json"
    if not path.exists():
        raise FileNotFoundError(f"no queue for {date}: {path} does not exist")
    tasks = json.loads(path.read_text())
    project_id = client.create_project(PROJECT_TITLE, outbox.label_config())
    present = {t.get("data", {}).get("task_key") for t in client.tasks(project_id)}
    new = [t for t in tasks if t["data"].get("task_key") not in present]
    task_ids = client.import_tasks(project_id, new)
    client.set_uncertainty_sampling(project_id)
    return {"project_id": project_id, "task_ids": task_ids, "skipped": len(tasks) - len(new)}


def export_rows(text: str, export_type: str) -> int:
    """How many annotations an export holds (JSON: cancelled ones included)."""
    if export_type == "CSV":
        return len(list(csv.DictReader(io.StringIO(text))))
    content = json.loads(text or "[]")
    if export_type == "JSON":
        return sum(len(task.get("annotations") or []) for task in content)
    return len(content)


def pull_export(client: LabelStudio, project_id: int, labeling_dir: Path,
                export_type: str = "JSON") -> Path | None:
    """Write the project's export into ``labeling_dir/inbox/`` as
    ``label-studio-<project>-<UTC time>.<json|csv>``; written under a name starting
    with '.' (which the import skips) and renamed, so the import never reads half a
    file. Returns the file's path, or None (and writes nothing) when the project has no
    annotations yet: an empty CSV export is a header without the task's columns, which
    the import would quarantine as "not a label export"."""
    text = client.export(project_id, export_type)
    if not export_rows(text, export_type):
        return None
    inbox_dir = Path(labeling_dir) / "inbox"
    inbox_dir.mkdir(parents=True, exist_ok=True)
    suffix = EXPORT_TYPES[export_type]
    while True:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        final = inbox_dir / f"label-studio-{project_id}-{stamp}.{suffix}"
        if not final.exists():
            break
        time.sleep(0.001)
    staging = inbox_dir / f".{final.name}.writing-{os.getpid()}"
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, final)
    return final


# -- the command line -------------------------------------------------------------------


def _token() -> str | None:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        print(f"set {TOKEN_ENV} (6-40 characters, your own secret): Label Studio's admin gets "
              f"it as API token on the first start, and push/pull use it", file=sys.stderr)
        return None
    if not 6 <= len(token) <= 40:
        print(f"{TOKEN_ENV} must be 6 to 40 characters long", file=sys.stderr)
        return None
    return token


def _labeling_dir(data_dir: str | None) -> Path:
    from flywheel_assets.settings import Settings

    return Settings.from_env(data_dir).labeling_dir


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    token = _token()
    if token is None:
        return 2
    if args.label_studio_dir:
        ls_dir = Path(args.label_studio_dir)
    else:
        from flywheel_assets.settings import Settings

        ls_dir = Settings.from_env(args.data_dir).data_dir / "label_studio"
    username = os.environ.get("LABEL_STUDIO_USERNAME") or DEFAULT_USERNAME
    password = os.environ.get("LABEL_STUDIO_PASSWORD") or token
    try:
        proc = start_server(Path(args.venv), ls_dir, args.port, username, password, token)
    except (FileNotFoundError, LabelStudioError, ValueError) as error:
        print(f"label studio: {error}", file=sys.stderr)
        return 2
    # Stop the server (its own process group) on Ctrl-C and on SIGTERM alike.
    signal.signal(signal.SIGTERM, _interrupt)
    url = f"http://127.0.0.1:{args.port}"
    try:
        started = time.monotonic()
        version = LabelStudio(url, token).wait_ready(args.timeout, proc=proc)
        print(f"Label Studio {version.get('release', '?')} at {url} "
              f"(ready in {time.monotonic() - started:.1f} s; data {ls_dir}; log "
              f"{proc.log_path}); log in as {username}"
              + ("" if os.environ.get("LABEL_STUDIO_PASSWORD") else f" with ${TOKEN_ENV} as password")
              + ". Ctrl-C stops it.", flush=True)
        return proc.wait()
    except LabelStudioError as error:
        print(f"label studio: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(proc)


def _push(args: argparse.Namespace) -> int:
    token = _token()
    if token is None:
        return 2
    try:
        result = push_queue(LabelStudio(args.url, token), _labeling_dir(args.data_dir), args.date)
    except (FileNotFoundError, LabelStudioError, urllib.error.URLError) as error:
        print(f"label studio push: {error}", file=sys.stderr)
        return 2
    print(f"{args.date}: {len(result['task_ids'])} tasks imported into project "
          f"{result['project_id']} ({result['skipped']} already there); "
          f"{args.url}/projects/{result['project_id']}/")
    return 0


def _pull(args: argparse.Namespace) -> int:
    token = _token()
    if token is None:
        return 2
    client = LabelStudio(args.url, token)
    try:
        project_id = args.project
        if project_id is None:
            found = [p for p in client.projects() if p.get("title") == PROJECT_TITLE]
            if not found:
                print(f"label studio pull: no project {PROJECT_TITLE!r} at {args.url} (push a "
                      f"queue first, or name one with --project)", file=sys.stderr)
                return 2
            project_id = int(found[0]["id"])
        path = pull_export(client, project_id, _labeling_dir(args.data_dir), args.format)
    except (LabelStudioError, urllib.error.URLError) as error:
        print(f"label studio pull: {error}", file=sys.stderr)
        return 2
    if path is None:
        print(f"nothing to pull: project {project_id} has no annotations yet")
        return 0
    print(f"wrote {path} ({path.stat().st_size} bytes); the next rotation's human_labels "
          f"imports it")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """`flywheel label-studio serve|push|pull` (an entry point of `flywheel.commands`)."""
    parser = subparsers.add_parser("label-studio", help="a local Label Studio: serve it, push "
                                   "the day's queue, pull the labels", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="label_studio_command", required=True)
    p = sub.add_parser("serve", help="run Label Studio in the foreground (Ctrl-C stops it)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--data-dir", help="the flywheel's data dir (default: $FLYWHEEL_DATA_DIR)")
    p.add_argument("--label-studio-dir",
                   help="Label Studio's own data (default: <data dir>/label_studio)")
    p.add_argument("--venv", default=str(DEFAULT_VENV), help="Label Studio's venv")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for it to start")
    p.set_defaults(func=_serve)
    for name, helptext, func in (("push", "import a day's labelling queue", _push),
                                 ("pull", "export the labels into the inbox", _pull)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--url", default=DEFAULT_URL)
        p.add_argument("--data-dir", help="the flywheel's data dir (default: $FLYWHEEL_DATA_DIR)")
        if name == "push":
            p.add_argument("--date", required=True, help="the queue's day, YYYY-MM-DD")
        else:
            p.add_argument("--project", type=int, help=f"project id (default: {PROJECT_TITLE!r})")
            p.add_argument("--format", choices=list(EXPORT_TYPES), default="JSON",
                           help="JSON keeps cancelled annotations (quarantined on import)")
        p.set_defaults(func=func)


if __name__ == "__main__":  # python -m flywheel_assets.label.studio ... = flywheel label-studio ...
    from flywheel_assets.cli import main

    sys.exit(main(["label-studio", *sys.argv[1:]]))
