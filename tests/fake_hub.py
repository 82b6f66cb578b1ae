"""A fake Hugging Face Hub on 127.0.0.1 for the remote-reading tests.

Two threaded HTTP servers, as the real Hub has two hosts:

- the API (``HF_ENDPOINT``): ``/api/models/OWNER/REPO[/revision/REV]`` (model info: commit and
  file list), ``/api/models/OWNER/REPO/tree/REV[/PATH]`` and ``.../paths-info/REV`` (what
  ``HfFileSystem`` asks), and ``/OWNER/REPO/resolve/REV/PATH``, answered with a 302 to the
  storage host and the ``X-Repo-Commit``, ``X-Linked-Etag`` and ``X-Linked-Size`` headers
  ``hf_hub_download`` reads; errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``);
- the storage host: the files, whole (200) or by ``Range`` (206 with ``Content-Range``), and
  every byte it sends counted per file; plus ``/plain/NAME`` (a plain URL), ``/norange/NAME``
  (a server that ignores ranges), ``/flood/NAME`` (one that sends more than asked),
  ``/claims/NAME`` (one whose file claims an absurd size) and ``/loop/NAME`` (a redirect to
  itself).

Gated repos answer model info to anyone and their files only with ``Authorization: Bearer``
:data:`TOKEN`, as the real Hub does. Each server is bound to loopback and
stopped by :meth:`FakeHub.close`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

TOKEN = "hf_fake_token_for_tests"
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    gated: bool = False
    sha: str = ""

    def __post_init__(self) -> None:
        if not self.sha:
            digest = hashlib.sha1(json.dumps(sorted(self.files)).encode())
            for name in sorted(self.files):
                digest.update(self.files[name][:4096])
            self.sha = digest.hexdigest()


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    plain: dict[str, bytes] = field(default_factory=dict)
    served: Counter[str] = field(default_factory=Counter)
    """Bytes the storage host sent, by file (``REPO/PATH`` or ``plain/NAME``)."""
    ranges: list[tuple[str, int, int]] = field(default_factory=list)
    """Every range the storage host answered: (file, start, end exclusive)."""
    api_requests: list[str] = field(default_factory=list)
    storage_requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._storage = ThreadingHTTPServer(("127.0.0.1", 0), _storage_handler(self))
        self._api = ThreadingHTTPServer(("127.0.0.1", 0), _api_handler(self))
        for server in (self._storage, self._api):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._api.server_address[1]}"

    @property
    def storage(self) -> str:
        return f"http://127.0.0.1:{self._storage.server_address[1]}"

    def close(self) -> None:
        for server in (self._api, self._storage):
            server.shutdown()
            server.server_close()

    def reset_counts(self) -> None:
        with self.lock:
            self.served.clear()
            self.ranges.clear()
            self.api_requests.clear()
            self.storage_requests.clear()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass

    def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def json(self, data: object, status: int = 200) -> None:
        self.send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def error(self, status: int, code: str) -> None:
        self.send(status, json.dumps({"error": code}).encode(), {"X-Error-Code": code})


def _api_handler(hub: FakeHub) -> type[_Handler]:
    class Api(_Handler):
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_POST(self) -> None:
            self.do_GET()

        def _repo(self, repo_id: str, rev: str, files: bool = False) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self.error(404, "RepoNotFound")
                return None
            # as on the real Hub, a gated repo's metadata is public; its files need a token
            authorised = self.headers.get("Authorization") == f"Bearer {TOKEN}"
            if repo.gated and files and not authorised:
                self.error(401, "GatedRepo")
                return None
            if rev not in ("main", repo.sha):
                self.error(404, "RevisionNotFound")
                return None
            return repo

        def _entries(self, repo: FakeRepo, prefix: str) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            dirs: set[str] = set()
            for name, data in sorted(repo.files.items()):
                if prefix and not name.startswith(prefix + "/"):
                    continue
                rest = name[len(prefix) + 1 :] if prefix else name
                if "/" in rest:
                    d = (prefix + "/" if prefix else "") + rest.split("/")[0]
                    if d not in dirs:
                        dirs.add(d)
                        out.append({"type": "directory", "path": d, "oid": "0" * 40, "size": 0})
                    continue
                out.append(_file_entry(name, data))
            return out

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            with hub.lock:
                hub.api_requests.append(f"{self.command} {path}")
            m = re.match(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?$", path)
            if m:
                repo = self._repo(m[1], m[2] or "main")
                if repo is not None:
                    self.json(
                        {
                            "id": m[1],
                            "modelId": m[1],
                            "sha": repo.sha,
                            "private": False,
                            "gated": "auto" if repo.gated else False,
                            "siblings": [{"rfilename": f} for f in sorted(repo.files)],
                            "tags": [],
                        }
                    )
                return
            m = re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", path)
            if m:
                repo = self._repo(m[1], m[2])
                if repo is not None:
                    self.json(self._entries(repo, (m[3] or "").strip("/")))
                return
            m = re.match(r"^/api/models/([^/]+/[^/]+)/paths-info/([^/]+)$", path)
            if m:
                repo = self._repo(m[1], m[2])
                if repo is None:
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                try:
                    asked = json.loads(body).get("paths", [])
                except ValueError:
                    asked = parse_qs(body).get("paths", [])
                out = []
                for p in asked:
                    if p in repo.files:
                        out.append(_file_entry(p, repo.files[p]))
                    elif any(f.startswith(p + "/") for f in repo.files):
                        out.append({"type": "directory", "path": p, "oid": "0" * 40, "size": 0})
                self.json(out)
                return
            m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
            if m:
                repo = self._repo(m[1], m[2], files=True)
                if repo is None:
                    return
                file = m[3]
                if file not in repo.files:
                    self.error(404, "EntryNotFound")
                    return
                data = repo.files[file]
                etag = hashlib.sha256(data).hexdigest()
                self.send(
                    302,
                    headers={
                        "Location": f"{hub.storage}/files/{m[1]}/{repo.sha}/{quote(file)}",
                        "X-Repo-Commit": repo.sha,
                        "ETag": f'"{etag}"',
                        "X-Linked-Etag": f'"{etag}"',
                        "X-Linked-Size": str(len(data)),
                    },
                )
                return
            self.error(404, "EntryNotFound")

    return Api


def _file_entry(name: str, data: bytes) -> dict[str, Any]:
    return {
        "type": "file",
        "path": name,
        "size": len(data),
        "oid": hashlib.sha1(data).hexdigest(),
    }


def _storage_handler(hub: FakeHub) -> type[_Handler]:
    class Storage(_Handler):
        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            with hub.lock:
                hub.storage_requests.append(f"{self.command} {path}")
            if path.startswith("/loop/"):
                self.send(302, headers={"Location": path})
                return
            m = re.match(r"^/files/([^/]+/[^/]+)/([0-9a-f]{40})/(.+)$", path)
            mode = "range"
            key = ""
            data: bytes | None = None
            if m:
                repo = hub.repos.get(m[1])
                if repo is not None and repo.sha == m[2]:
                    data = repo.files.get(m[3])
                    key = f"{m[1]}/{m[3]}"
            else:
                m = re.match(r"^/(plain|norange|flood|claims)/(.+)$", path)
                if m:
                    mode, data, key = m[1], hub.plain.get(m[2]), f"{m[1]}/{m[2]}"
            if data is None:
                self.send(404)
                return
            asked = _RANGE.match(self.headers.get("Range", ""))
            if asked is None or mode == "norange":
                self._count(key, 0, len(data))
                self.send(200, data, {"Accept-Ranges": "bytes"})
                return
            start = int(asked[1])
            end = min(len(data), int(asked[2]) + 1 if asked[2] else len(data))
            if start >= len(data):
                self.send(416, headers={"Content-Range": f"bytes */{len(data)}"})
                return
            total = 1 << 44 if mode == "claims" else len(data)
            body = data[start:end]
            if mode == "flood":
                body = body + b"\0" * (1 << 20)
            # counted before it is sent: a client that has read it may look at once
            self._count(key, start, start + len(body))
            self.send(206, body, {"Content-Range": f"bytes {start}-{end - 1}/{total}"})

        def _count(self, key: str, start: int, end: int) -> None:
            if self.command == "HEAD":
                return
            with hub.lock:
                hub.served[key] += end - start
                hub.ranges.append((key, start, end))

    return Storage


def repo_from_dir(directory: Path, prefix: str = "") -> dict[str, bytes]:
    """Every file under ``directory`` as a repo's files, under ``prefix``."""
    return {
        prefix + p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
