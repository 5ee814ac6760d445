"""A small stand-in for the Hugging Face Hub: the endpoints ``huggingface_hub`` calls for
``create_repo``, ``create_branch``, ``repo_info``, ``hf_hub_download`` and ``upload_folder``
(preupload, the LFS batch API with basic transfers, the ndjson commit), over 127.0.0.1.
The one stand-in the push tests use (the real Hub needs an account); clients point at it
with ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET=1`` (Xet storage is not spoken here)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit
    trees: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    commits: list[str] = field(default_factory=list)
    pulls: list[str] = field(default_factory=list)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.tokens_seen: set[str] = set()
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub.handle(self, "HEAD")

            def do_GET(self) -> None:
                hub.handle(self, "GET")

            def do_POST(self) -> None:
                hub.handle(self, "POST")

            def do_PUT(self) -> None:
                hub.handle(self, "PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    # -- state ---------------------------------------------------------------------------
    def commit(self, repo: Repo, branch: str, files: dict[str, bytes], summary: str) -> str:
        sha = hashlib.sha1(f"{len(repo.commits)}:{summary}".encode()).hexdigest()
        repo.trees[sha] = files
        repo.branches[branch] = sha
        repo.commits.append(sha)
        return sha

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.trees[repo.branches[revision]]

    # -- HTTP ----------------------------------------------------------------------------
    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            self.tokens_seen.add(auth.removeprefix("Bearer "))
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        path = request.path.split("?", 1)[0]
        query = request.path.split("?", 1)[1] if "?" in request.path else ""
        with self.lock:
            status, headers, payload = self.route(method, path, query, body)
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        if method != "HEAD":
            request.wfile.write(payload)

    def route(
        self, method: str, path: str, query: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        def answer(value: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
            return status, {"Content-Type": "application/json"}, json.dumps(value).encode()

        def missing(code: str) -> tuple[int, dict[str, str], bytes]:
            return (
                404,
                {"X-Error-Code": code, "Content-Type": "application/json"},
                b'{"error":"not found"}',
            )

        if method == "POST" and path == "/api/repos/create":
            data = json.loads(body)
            repo_id = f"{data['organization']}/{data['name']}"
            if repo_id in self.repos:
                return answer(
                    {
                        "error": "You already created this model repo",
                        "url": f"{self.url}/{repo_id}",
                    },
                    409,
                )
            private = data.get("visibility") == "private" or data.get("private") is True
            repo = self.repos[repo_id] = Repo(private=private)
            self.commit(repo, "main", {".gitattributes": b"*.safetensors filter=lfs\n"}, "init")
            return answer({"url": f"{self.url}/{repo_id}"})
        if method == "POST" and path == "/api/validate-yaml":
            return answer({"errors": [], "warnings": []})
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/branch/(.+)", path):
            repo = self.repos[match[1]]
            repo.branches.setdefault(match[2], repo.branches["main"])
            return answer({})
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path):
            if match[1] not in self.repos:
                return missing("RepoNotFound")
            repo = self.repos[match[1]]
            sha = repo.branches.get(match[2])
            if sha is None:
                return missing("RevisionNotFound")
            siblings = [{"rfilename": name} for name in sorted(repo.trees[sha])]
            return answer(
                {"id": match[1], "sha": sha, "private": repo.private, "siblings": siblings}
            )
        if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            repo = self.repos.get(match[1])
            if repo is None:
                return missing("RepoNotFound")
            sha = repo.branches.get(match[2])
            if sha is None:
                return missing("RevisionNotFound")
            data = repo.trees[sha].get(match[3])
            if data is None:
                return missing("EntryNotFound")
            headers = {"X-Repo-Commit": sha, "ETag": f'"{git_sha1(data)}"'}
            return 200, headers, data
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/(.+)", path):
            tree = self.files(match[1], match[2])
            answers = []
            for entry in json.loads(body)["files"]:
                lfs = entry["path"].endswith(".safetensors")
                remote = tree.get(entry["path"])
                oid = None
                if remote is not None:
                    oid = hashlib.sha256(remote).hexdigest() if lfs else git_sha1(remote)
                answers.append(
                    {
                        "path": entry["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": oid,
                    }
                )
            return answer({"files": answers})
        if re.fullmatch(r"/[^/]+/[^/]+\.git/info/lfs/objects/batch", path):
            objects = []
            for obj in json.loads(body)["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in self.lfs:
                    entry["actions"] = {"upload": {"href": f"{self.url}/lfs/{obj['oid']}"}}
                objects.append(entry)
            return answer({"transfer": "basic", "objects": objects})
        if method == "PUT" and (match := re.fullmatch(r"/lfs/([0-9a-f]{64})", path)):
            if hashlib.sha256(body).hexdigest() != match[1]:
                return answer({"error": "digest mismatch"}, 400)
            self.lfs[match[1]] = body
            return answer({})
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/(.+)", path):
            repo = self.repos[match[1]]
            branch = match[2].replace("%2F", "/")
            files = dict(self.files(match[1], branch))
            summary = ""
            for line in body.splitlines():
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    summary = value["summary"]
                elif item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "lfsFile":
                    files[value["path"]] = self.lfs[value["oid"]]
            pr = "create_pr=1" in query
            target = f"refs/pr/{len(repo.pulls) + 1}" if pr else branch
            sha = self.commit(repo, target, files, summary)
            pr_url = None
            if pr:
                repo.pulls.append(sha)
                pr_url = f"{self.url}/{match[1]}/discussions/{len(repo.pulls)}"
            return answer(
                {
                    "commitUrl": f"{self.url}/{match[1]}/commit/{sha}",
                    "commitOid": sha,
                    "pullRequestUrl": pr_url,
                }
            )
        return answer({"error": f"not served here: {method} {path}"}, 404)
