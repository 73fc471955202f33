"""A stand-in for the Hugging Face hub (fake: no hub is reachable here) serving local directories.

Just the two endpoints `huggingface_hub.snapshot_download` uses: repo info at a revision (the file list and
the commit) and file downloads by revision. Repos are local directories registered as (repo, sha) -> dir;
any other repo or revision answers 404, as the hub does for an unknown commit.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


class HubStub:
    def __init__(self, repos: dict[tuple[str, str], Path], host: str = "127.0.0.1", port: int = 0) -> None:
        self.repos = dict(repos)
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _file(self) -> tuple[Path, str] | None:
                path = unquote(self.path.split("?", 1)[0])
                # /{org}/{name}/resolve/{rev}/{file...}
                parts = path.strip("/").split("/")
                if len(parts) >= 5 and parts[2] == "resolve":
                    repo, rev, rel = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
                    root = stub.repos.get((repo, rev))
                    if root is not None and (root / rel).is_file() and ".." not in parts:
                        return root / rel, rev
                return None

            def _send_file(self, body: bool) -> None:
                found = self._file()
                if found is None:
                    self.send_error(404, "Entry not found")
                    return
                f, rev = found
                data = f.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", rev)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                stub.requests.append("HEAD " + self.path)
                self._send_file(body=False)

            def do_GET(self) -> None:
                stub.requests.append("GET " + self.path)
                path = unquote(self.path.split("?", 1)[0])
                parts = path.strip("/").split("/")
                # /api/models/{org}/{name}/revision/{rev} and /api/models/{org}/{name}/tree/{rev}
                if len(parts) == 6 and parts[:2] == ["api", "models"] and parts[4] in ("revision", "tree"):
                    repo, rev = f"{parts[2]}/{parts[3]}", parts[5]
                    root = stub.repos.get((repo, rev))
                    if root is None:
                        self.send_error(404, "Revision not found")
                        return
                    files = sorted(p for p in root.rglob("*") if p.is_file())
                    names = [p.relative_to(root).as_posix() for p in files]
                    info: object
                    if parts[4] == "tree":
                        info = [{"type": "file", "path": n, "size": p.stat().st_size,
                                 "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
                                for n, p in zip(names, files, strict=True)]
                    else:
                        info = {"id": repo, "modelId": repo, "sha": rev, "siblings": [{"rfilename": n} for n in names]}
                    body = json.dumps(info).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self._send_file(body=True)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> HubStub:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
