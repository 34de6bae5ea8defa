"""A real HTTP server on 127.0.0.1 that answers the way the Hugging Face hub's file endpoints do.

Tests point ``HF_ENDPOINT`` at it, so huggingface_hub (and ``monai.bundle download``) run their real
code paths against it. It serves:

- ``HEAD|GET /{repo_id}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1) and
  ``Content-Length`` for small files; for weights (LFS files) a 302 to a second server (the "CDN", another
  origin, so the client does not follow it on HEAD) with ``X-Linked-Etag`` (the sha256) and
  ``X-Linked-Size``, as the hub does. Errors carry ``X-Error-Code`` (RepoNotFound / RevisionNotFound /
  EntryNotFound) like the hub's, which huggingface_hub turns into its typed errors.
- ``GET /api/models/{repo_id}/revision/{rev}``, ``/tree/{rev}``, ``/refs``: what ``snapshot_download`` and
  ``list_repo_refs`` read (so ``monai.bundle download --source huggingface_hub`` works).
- ``POST /api/repos/create``, ``/api/models/{repo_id}/preupload/{rev}``, ``/commit/{rev}``, ``/tag/{rev}``:
  enough of the upload API for ``HfApi.upload_folder`` with regular (non-LFS) uploads and ``create_tag``.
- ``GET /files/{path}``: plain files for the zoo's ``url`` source.
Faults, per served path: ``cut`` (send half the body, then drop the connection; later range requests are
dropped before any answer), ``cut-once`` (the same the first time only; later requests are served, as
when the network comes back) and ``stall`` (send half, then wait until ``release`` is set).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LFS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    """One hub repo: commits (commit sha -> {path: bytes}), branches and tags."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        self.commits: dict[str, dict[str, bytes]] = {}
        self.branches: dict[str, str] = {}
        self.tags: dict[str, str] = {}

    def commit(self, files: dict[str, bytes], branch: str = "main") -> str:
        parent = self.branches.get(branch, "")
        digest = hashlib.sha1(parent.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
        sha = digest.hexdigest()
        self.commits[sha] = dict(files)
        self.branches[branch] = sha
        return sha

    def resolve(self, revision: str) -> str | None:
        if revision in self.commits:
            return revision
        return self.branches.get(revision) or self.tags.get(revision)


class HubServer:
    """The fake hub plus its CDN, each a ThreadingHTTPServer on an ephemeral 127.0.0.1 port."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.plain: dict[str, bytes] = {}
        self.faults: dict[str, str] = {}
        self.cut_done: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []

    # --- content -------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], tags: tuple[str, ...] = ()) -> str:
        repo = self.repos.setdefault(repo_id, Repo(repo_id))
        sha = repo.commit(files)
        for tag in tags:
            repo.tags[tag] = sha
        return sha

    def blob(self, sha256: str) -> bytes | None:
        for repo in self.repos.values():
            for files in repo.commits.values():
                for data in files.values():
                    if hashlib.sha256(data).hexdigest() == sha256:
                        return data
        return None

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "HubServer":
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
            server.daemon_threads = True
            server.hub = self  # type: ignore[attr-defined]
            server.role = role  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        self.release.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def log(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    # --- helpers -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str, head: bool, commit: str | None = None) -> None:
        headers = {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, json.dumps({"error": code}).encode(), headers, head)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _serve_bytes(self, key: str, data: bytes, headers: dict[str, str], head: bool) -> None:
        """200 / 206 with the body, unless the path has a fault to play."""
        fault = self.hub.faults.get(key)
        range_header = self.headers.get("Range")
        if fault == "cut-once" and not head:
            with self.hub._lock:
                if key in self.hub.cut_done:
                    fault = None  # the network is back: the client's next attempt is served
                self.hub.cut_done.add(key)
        if fault and fault != "cut-once" and not head and range_header:
            return self._drop()  # the server is gone: the client's resume attempts get no answer
        start = 0
        status = 200
        if range_header and range_header.startswith("bytes=") and range_header.endswith("-"):
            start = int(range_header[len("bytes=") : -1])
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if head:
            return
        if fault in ("cut", "cut-once", "stall"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if fault == "stall":
                self.hub.stalled.set()
                self.hub.release.wait(30)
            return self._drop()
        self.wfile.write(body)

    # --- routes --------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        self.hub.log(self.command, path)
        role = self.server.role  # type: ignore[attr-defined]
        if role == "cdn":
            return self._cdn(path, head)
        if path.startswith("/files/"):
            key = path[len("/files/") :]
            data = self.hub.plain.get(key)
            if data is None:
                return self._send(404, b"not found", {"Content-Type": "text/plain"}, head)
            ctype = "text/html" if key.endswith(".html-page") else "application/octet-stream"
            return self._serve_bytes(key, data, {"Content-Type": ctype}, head)
        if path.startswith("/api/models/"):
            return self._api_get(path[len("/api/models/") :], urllib.parse.parse_qs(url.query), head)
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), head)
        self._send(404, b"no route", {"Content-Type": "text/plain"}, head)

    def _resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error(401, "RepoNotFound", head)
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", head)
        data = repo.commits[commit].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", head, commit)
        if filename.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            headers = {
                "Location": f"{self.hub.cdn}/cdn/{sha256}?filename={urllib.parse.quote(filename)}",
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{git_blob_sha1(data)}"',
            }
            return self._send(302, b"", headers, head)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"', "Content-Type": "application/octet-stream"}
        self._serve_bytes(f"{repo_id}/{filename}", data, headers, head)

    def _cdn(self, path: str, head: bool) -> None:
        sha256 = path.rsplit("/", 1)[-1]
        data = self.hub.blob(sha256)
        if data is None:
            return self._send(404, b"no such blob", {"Content-Type": "text/plain"}, head)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        key = next((k for k in self.hub.faults if k.endswith("/" + query.get("filename", [""])[0])), sha256)
        self._serve_bytes(key, data, {"Content-Type": "application/octet-stream", "ETag": f'"{sha256}"'}, head)

    def _api_get(self, rest: str, query: dict[str, list[str]], head: bool) -> None:
        parts = rest.split("/")
        repo = self.hub.repos.get("/".join(parts[:2]))
        if repo is None:
            return self._error(401, "RepoNotFound", head)
        action = parts[2] if len(parts) > 2 else "revision"
        if action == "refs":
            ref = lambda kind, name, sha: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}  # noqa: E731
            return self._json(
                {
                    "branches": [ref("heads", n, s) for n, s in repo.branches.items()],
                    "tags": [ref("tags", n, s) for n, s in repo.tags.items()],
                    "converts": [],
                }
            )
        revision = urllib.parse.unquote(parts[3]) if len(parts) > 3 else "main"
        commit = repo.resolve(revision)
        if commit is None:
            return self._error(404, "RevisionNotFound", head)
        files = repo.commits[commit]
        if action == "revision":
            return self._json({"id": repo.repo_id, "sha": commit, "siblings": [{"rfilename": p} for p in sorted(files)]})
        if action == "tree":
            rows = []
            for p in sorted(files):
                row: dict[str, Any] = {"type": "file", "path": p, "size": len(files[p]), "oid": git_blob_sha1(files[p])}
                if p.endswith(LFS_SUFFIXES):
                    row["lfs"] = {"oid": hashlib.sha256(files[p]).hexdigest(), "size": len(files[p]), "pointerSize": 130}
                rows.append(row)
            return self._json(rows)
        self._send(404, b"no route", {"Content-Type": "text/plain"}, head)

    # --- upload API (regular uploads only) -----------------------------------------------------
    def do_POST(self) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        self.hub.log("POST", path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if path == "/api/repos/create":
            payload = json.loads(body or b"{}")
            repo_id = f"{payload.get('organization')}/{payload['name']}" if payload.get("organization") else payload["name"]
            if repo_id in self.hub.repos:
                return self._json({"error": "You already created this model repo", "url": f"{self.hub.endpoint}/{repo_id}"}, 409)
            self.hub.repos[repo_id] = Repo(repo_id)
            self.hub.repos[repo_id].commit({".gitattributes": b"*.safetensors filter=lfs\n"})
            return self._json({"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id})
        parts = path[len("/api/models/") :].split("/") if path.startswith("/api/models/") else []
        repo = self.hub.repos.get("/".join(parts[:2])) if len(parts) >= 4 else None
        if repo is None:
            return self._error(404, "RepoNotFound", False)
        action, revision = parts[2], parts[3]
        if action == "preupload":
            files = json.loads(body).get("files", [])
            return self._json(
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files], "commitOid": repo.resolve(revision)}
            )
        if action == "commit":
            current = dict(repo.commits.get(repo.resolve(revision) or "", {}))
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item.get("key") == "file":
                    current[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item.get("key") == "deletedFile":
                    current.pop(item["value"]["path"], None)
            sha = repo.commit(current, branch=revision)
            return self._json({"commitOid": sha, "commitUrl": f"{self.hub.endpoint}/{repo.repo_id}/commit/{sha}", "success": True})
        if action == "tag":
            tag = json.loads(body)["tag"]
            commit = repo.resolve(revision)
            if tag in repo.tags:
                return self._json({"error": "tag exists"}, 409)
            repo.tags[tag] = commit  # type: ignore[assignment]
            return self._json({"name": tag})
        self._error(404, "EntryNotFound", False)
