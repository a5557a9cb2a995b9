"""A loopback Hugging Face Hub: the slice of the Hub's HTTP API that pushing and loading a model use.

Standard library plus PyYAML (a huggingface_hub dependency); a ``ThreadingHTTPServer`` on
127.0.0.1 (random port) in a background thread, repos kept in memory. It serves what
``huggingface_hub`` 2.x calls for ``create_repo`` + ``upload_folder`` (also its Xet-era
pipelined upload: every file is answered ``uploadMode: regular``, so its content comes inline
in the commit and no Xet or LFS transfer starts), for ``snapshot_download`` / ``hf_hub_download``
(repo info, recursive tree, ``resolve`` HEAD/GET without any ``X-Xet-*`` header, so downloads
stay plain HTTP) and for ``ModelCard.validate`` / README checks (``/api/validate-yaml``).

Model repos and Space repos (``repo_type="space"``: what ``evaluate`` modules live in; created
with a ``sdk``) are kept apart, as on the Hub: the same id can name one of each. Space routes
are the model routes with ``/api/spaces/…`` for ``/api/models/…`` and ``/spaces/{ns}/{name}/resolve/…``
for ``/{ns}/{name}/resolve/…`` (where ``evaluate.load("ns/name")`` fetches ``name.py``).

Every request is recorded (method, path, headers, body). ``fail_next(route, status, times)``
makes the next calls of a route fail; the error body echoes the request's ``Authorization``
header, as a hostile or buggy server might, so that callers' redaction is really tested.

Routes (names used by ``fail_next`` and ``requests_to``)::

    create_repo    POST /api/repos/create                          JSON: name, organization, type (model|space), sdk
    repo_info      GET  /api/{models|spaces}/{ns}/{name}[/revision/{rev}]
    preupload      POST /api/{models|spaces}/{ns}/{name}/preupload/{rev}
    commit         POST /api/{models|spaces}/{ns}/{name}/commit/{rev}      NDJSON: header, file, deletedFile, deletedFolder
    tree           GET  /api/{models|spaces}/{ns}/{name}/tree/{rev}[/{path}]
    resolve        HEAD|GET [/spaces]/{ns}/{name}/resolve/{rev}/{path}
    validate_yaml  POST /api/validate-yaml
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_KIND = r"(?P<kind>models|spaces)"
_ROUTES = [
    ({"POST"}, re.compile(r"/api/repos/create"), "create_repo"),
    ({"GET"}, re.compile(rf"/api/{_KIND}/{_REPO}(?:/revision/(?P<rev>[^/]+))?"), "repo_info"),
    ({"POST"}, re.compile(rf"/api/{_KIND}/{_REPO}/preupload/(?P<rev>[^/]+)"), "preupload"),
    ({"POST"}, re.compile(rf"/api/{_KIND}/{_REPO}/commit/(?P<rev>[^/]+)"), "commit"),
    ({"GET"}, re.compile(rf"/api/{_KIND}/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?"), "tree"),
    ({"GET", "HEAD"}, re.compile(rf"/(?:(?P<kind>spaces)/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"), "resolve"),
    ({"POST"}, re.compile(r"/api/validate-yaml"), "validate_yaml"),
]
#: Repo type of a route's ``kind`` (``/api/models``, ``/api/spaces``, ``/spaces/…/resolve``).
_TYPE_OF_KIND = {"models": "model", "spaces": "space"}
ROUTE_NAMES = frozenset(name for _, _, name in _ROUTES)
Response = tuple[int, dict[str, str], bytes]  # status, headers, body
_YAML_BLOCK = re.compile(r"\A\s*---\r?\n(.*?)\r?\n---(?:\r?\n|\Z)", re.DOTALL)


def git_oid(content: bytes) -> str:
    """The git blob id of ``content`` (what the Hub reports as a regular file's oid and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    summary: str
    description: str
    files: dict[str, bytes]  # the whole tree after this commit


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit]  # commits[0] is the one the Hub makes at creation (.gitattributes)
    branches: dict[str, str] = field(default_factory=dict)  # branch → commit oid
    repo_type: str = "model"  # or "space"
    sdk: str | None = None  # a Space's SDK (gradio, streamlit, docker, static)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev, rev)
        return next((c for c in self.commits if len(oid) >= 7 and c.oid.startswith(oid)), None)


@dataclass
class RecordedRequest:
    method: str
    path: str  # still URL-quoted, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes
    route: str | None


class HubError(Exception):
    """An error answer: status, message, and the ``X-Error-Code`` huggingface_hub dispatches on."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.extra = headers or {}, extra or {}  # extra: more fields of the JSON body


class LoopbackHub:
    """The server; ``with LoopbackHub(tokens={"hf_x"}) as hub: hub.url …``.

    ``tokens``: the tokens accepted in ``Authorization: Bearer …``; writes need one, reads of a
    private repo too.
    """

    def __init__(self, tokens: set[str] | frozenset[str] = frozenset()) -> None:
        self.tokens = set(tokens)
        self.repos: dict[str, Repo] = {}  # model repos
        self.spaces: dict[str, Repo] = {}  # Space repos
        self.requests: list[RecordedRequest] = []
        self._failures: dict[str, list[int]] = {}  # route → [status, times left]
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _handler_class(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="loopback-hub", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers
    def fail_next(self, route: str, status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``route`` with ``status`` (body echoes Authorization)."""
        if route not in ROUTE_NAMES:
            raise ValueError(f"unknown route {route!r}; routes: {sorted(ROUTE_NAMES)}")
        with self._lock:
            self._failures[route] = [status, times]

    def requests_to(self, route: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.route == route]

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self._lock:
            return self._store(repo_type)[repo_id]

    def _store(self, repo_type: str) -> dict[str, Repo]:
        return self.spaces if repo_type == "space" else self.repos

    # ------------------------------------------------------------------ dispatch
    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        split = urlsplit(raw_path)
        query = parse_qs(split.query)
        with self._lock:
            match, route = None, None
            for methods, pattern, name in _ROUTES:
                match = pattern.fullmatch(split.path)
                if match and method in methods:
                    route = name
                    break
            self.requests.append(RecordedRequest(method, split.path, query, headers, body, route))
            try:
                if route is None:
                    raise HubError(404, f"no route for {method} {split.path} on this loopback Hub")
                self._maybe_fail(route, headers)
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                if "kind" in params:
                    params["repo_type"] = _TYPE_OF_KIND[params.pop("kind")]
                handler: Callable[..., Response] = getattr(self, f"_{route}")
                return handler(headers=headers, query=query, body=body, **params)
            except HubError as err:
                return _error_response(err, headers)

    def _maybe_fail(self, route: str, headers: dict[str, str]) -> None:
        failure = self._failures.get(route)
        if not failure or failure[1] <= 0:
            return
        failure[1] -= 1
        # the echo goes in the body only: httpcore2 logs response headers at DEBUG level
        raise HubError(failure[0], f"Internal Error while handling a request with Authorization: "
                       f"{headers.get('authorization')}", headers={"X-Error-Message": "Internal Error"})

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[len("Bearer "):] in self.tokens

    def _require_auth(self, headers: dict[str, str]) -> None:
        if not self._authorized(headers):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _get_repo(self, repo_id: str, headers: dict[str, str], repo_type: str = "model") -> Repo:
        repo = self._store(repo_type).get(repo_id)
        if repo is None or (repo.private and not self._authorized(headers)):
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _get_commit(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ routes
    def _create_repo(self, *, headers: dict[str, str], body: bytes, **_: Any) -> Response:
        self._require_auth(headers)
        payload = json.loads(body)
        repo_type = payload.get("type") or "model"
        if repo_type not in ("model", "space"):
            raise HubError(400, f"this loopback Hub hosts model and space repos, not {repo_type!r}")
        if repo_type == "space" and payload.get("sdk") not in ("gradio", "streamlit", "docker", "static"):
            raise HubError(400, f"a space needs an sdk (gradio, streamlit, docker, static), got {payload.get('sdk')!r}")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if "/" not in repo_id:
            raise HubError(400, "give the namespace: this loopback Hub has no default user")
        store, prefix = self._store(repo_type), "spaces/" if repo_type == "space" else ""
        url = f"{self.url}/{prefix}{repo_id}"
        if repo_id in store:
            # huggingface_hub reads "url" from this 409 too (create_repo(exist_ok=True))
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
        initial = Commit(hashlib.sha1(f"initial commit of {prefix}{repo_id}".encode()).hexdigest(), "initial commit",
                         "", {".gitattributes": GITATTRIBUTES})
        store[repo_id] = Repo(repo_id, payload.get("visibility") == "private", [initial], {"main": initial.oid},
                              repo_type, payload.get("sdk"))
        return _json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(
        self, *, repo: str, headers: dict[str, str], rev: str = "main", repo_type: str = "model", **_: Any
    ) -> Response:
        hosted = self._get_repo(repo, headers, repo_type)
        commit = self._get_commit(hosted, rev)
        info = {
            "id": repo, "sha": commit.oid, "private": hosted.private, "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(commit.files)],
        }
        if repo_type == "space":
            info["sdk"] = hosted.sdk
        else:
            info["modelId"] = repo
        return _json(200, info)

    def _preupload(
        self, *, repo: str, rev: str, headers: dict[str, str], body: bytes, repo_type: str = "model", **_: Any
    ) -> Response:
        self._require_auth(headers)
        head = self._get_commit(self._get_repo(repo, headers, repo_type), rev)
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
             "oid": git_oid(head.files[f["path"]]) if f["path"] in head.files else None}
            for f in json.loads(body)["files"]
        ]
        return _json(200, {"files": files, "commitOid": head.oid})

    def _commit(
        self, *, repo: str, rev: str, headers: dict[str, str], body: bytes, repo_type: str = "model", **_: Any
    ) -> Response:
        self._require_auth(headers)
        hosted = self._get_repo(repo, headers, repo_type)
        if rev not in hosted.branches:
            raise HubError(404, f"Invalid rev id: {rev} (commits go to an existing branch)", code="RevisionNotFound")
        head = self._get_commit(hosted, rev)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header" or not lines[0]["value"].get("summary"):
            raise HubError(400, "the first NDJSON line must be a header with a summary")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, head.oid):
            raise HubError(412, f"parent commit {header['parentCommit']} is not the head of {rev} ({head.oid})")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(422, f"unsupported commit operation {key!r}: this loopback Hub takes regular files only")
        tree = sorted((p, git_oid(c)) for p, c in files.items())
        oid = hashlib.sha1(json.dumps([head.oid, header["summary"], tree]).encode()).hexdigest()
        hosted.commits.append(Commit(oid, header["summary"], header.get("description", ""), files))
        hosted.branches[rev] = oid
        url = f"{self.url}/{'spaces/' if repo_type == 'space' else ''}{repo}/commit/{oid}"
        return _json(200, {"success": True, "commitOid": oid, "commitUrl": url, "hookOutput": ""})

    def _tree(
        self, *, repo: str, rev: str, headers: dict[str, str], query: dict[str, list[str]], path: str = "",
        repo_type: str = "model", **_: Any,
    ) -> Response:
        commit = self._get_commit(self._get_repo(repo, headers, repo_type), rev)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for file_path, content in commit.files.items():
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # folders on the way
                folder = prefix + "/".join(parts[:depth])
                entries[folder] = {"type": "directory", "path": folder, "size": 0, "oid": git_oid(folder.encode())}
                if not recursive:
                    break
            if recursive or len(parts) == 1:
                entries[file_path] = {"type": "file", "path": file_path, "size": len(content), "oid": git_oid(content)}
        if prefix and not entries:
            raise HubError(404, f"{path} does not exist at {rev}", code="EntryNotFound")
        return _json(200, [entries[k] for k in sorted(entries)])

    def _resolve(
        self, *, repo: str, rev: str, path: str, headers: dict[str, str], repo_type: str = "model", **_: Any
    ) -> Response:
        commit = self._get_commit(self._get_repo(repo, headers, repo_type), rev)
        if path not in commit.files:
            raise HubError(404, f"{path} does not exist at {rev}", code="EntryNotFound",
                           headers={"X-Repo-Commit": commit.oid})
        content = commit.files[path]
        return 200, {"Content-Type": "application/octet-stream", "X-Repo-Commit": commit.oid,
                     "ETag": f'"{git_oid(content)}"'}, content

    def _validate_yaml(self, *, headers: dict[str, str], body: bytes, **_: Any) -> Response:
        errors, warnings = validate_card_metadata(json.loads(body).get("content", ""))
        plain = "text/plain" in headers.get("accept", "")
        if plain:  # ModelCard.validate asks for text and raises ValueError(response.text) on a 400
            return 400 if errors else 200, {"Content-Type": "text/plain"}, "\n".join(errors + warnings).encode()
        status, payload = 400 if errors else 200, {
            "errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings],
        }
        return _json(status, payload)


def validate_card_metadata(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README's YAML block; the ``model-index`` checks mirror the Hub's."""
    block = _YAML_BLOCK.match(content)
    if block is None:
        return [], ["empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(block.group(1))
    except yaml.YAMLError as err:
        return [f"invalid YAML in the metadata block: {err}"], []
    if meta is None:
        return [], ["empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return ["the metadata block must be a YAML mapping"], []
    return _model_index_errors(meta["model-index"]) if "model-index" in meta else [], []


def _model_index_errors(index: Any) -> list[str]:
    if not isinstance(index, list):
        return ['"model-index" must be an array']
    errors = []

    def need(obj: Any, key: str, where: str, kind: type, what: str) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind) or value == "":
            errors.append(f'"{where}.{key}" is required and must be {what}')
            return None
        return value

    for i, model in enumerate(index):
        where = f"model-index[{i}]"
        need(model, "name", where, str, "a string")
        for j, result in enumerate(need(model, "results", where, list, "an array") or []):
            at = f"{where}.results[{j}]"
            need(need(result, "task", at, dict, "an object"), "type", f"{at}.task", str, "a string")
            dataset = need(result, "dataset", at, dict, "an object")
            need(dataset, "type", f"{at}.dataset", str, "a string")
            need(dataset, "name", f"{at}.dataset", str, "a string")
            metrics = need(result, "metrics", at, list, "an array")
            if metrics == []:
                errors.append(f'"{at}.metrics" must list at least one metric')
            for k, metric in enumerate(metrics or []):
                need(metric, "type", f"{at}.metrics[{k}]", str, "a string")
                if not isinstance(metric, dict) or "value" not in metric:
                    errors.append(f'"{at}.metrics[{k}].value" is required')
    return errors


def _json(status: int, payload: Any) -> Response:
    return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()


def _error_response(err: HubError, request_headers: dict[str, str]) -> Response:
    headers = {"X-Error-Message": err.message.splitlines()[0][:200], **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    if "text/plain" in request_headers.get("accept", ""):
        return err.status, {**headers, "Content-Type": "text/plain"}, err.message.encode()
    status, json_headers, body = _json(err.status, {"error": err.message, **err.extra})
    return status, {**headers, **json_headers}, body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # snapshot_download opens 8 connections at once; the default listen backlog of 5 drops SYNs,
    # which the client resends after a 1 s stall
    request_queue_size = 64


def _handler_class(hub: LoopbackHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 (the default): one connection per request, so no handler thread outlives stop()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out_headers, payload = hub.handle(self.command, self.path, headers, body)
            self.send_response(status)
            for key, value in out_headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler
