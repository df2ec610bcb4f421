"""An in-memory Hugging Face Hub behind ``huggingface_hub``'s own HTTP client (only the transport is replaced).

``FakeHub.install(monkeypatch)`` points ``huggingface_hub`` at an ``httpx2.MockTransport`` that answers the
endpoints a dataset upload uses: repo create, tree listing, YAML validation, preupload, the LFS batch API and
the LFS PUT, and the NDJSON commit. Hashes are computed from the bytes received (LFS sha256, git blob sha1), so
a test can corrupt what the "hub" stores and see verification fail. Xet is disabled (it bypasses this client).
"""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import unquote

ENDPOINT = "https://hub.test"
LFS_EXTENSIONS = (".tar", ".parquet", ".npy", ".png")


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}  # repo_id -> {path: bytes} (branch main only)
        self.lfs_objects: dict[str, bytes] = {}
        self.commits: list[dict] = []  # {"repo", "summary", "adds": [paths], "deletes": [paths]}
        self.puts = 0
        self.fail_commit_number: int | None = None  # 1-based commit that answers 400 (5xx would be retried)
        self.requests: list[str] = []

    def install(self, monkeypatch) -> None:
        import httpx2
        from huggingface_hub import constants
        from huggingface_hub.utils import _http

        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "ENDPOINT", ENDPOINT)
        monkeypatch.setenv("HF_TOKEN", "hf_fake")
        _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(self.handle)))

    @staticmethod
    def uninstall() -> None:
        from huggingface_hub.utils import _http

        _http.set_client_factory(_http.default_client_factory)

    # -------------------------------------------------------------------------------------------- helpers
    def tree(self, repo_id: str) -> list[dict]:
        out = []
        for path, data in sorted(self.repos[repo_id].items()):
            entry = {"type": "file", "path": path, "size": len(data),
                     "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if path.endswith(LFS_EXTENSIONS):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out.append(entry)
        return out

    def handle(self, request):
        import httpx2

        url, method = request.url, request.method
        path = unquote(url.path)
        self.requests.append(f"{method} {path}")
        if url.host == "upload.test" and method == "PUT":
            self.lfs_objects[path.strip("/")] = request.read()
            self.puts += 1
            return httpx2.Response(200)
        if path == "/api/repos/create":
            body = json.loads(request.read())
            repo_id = f"{body.get('organization') or 'me'}/{body['name']}"
            if repo_id in self.repos:
                return httpx2.Response(409, json={"error": "You already created this dataset repo",
                                                  "url": f"{ENDPOINT}/datasets/{repo_id}"})
            self.repos[repo_id] = {".gitattributes": b"*.tar filter=lfs\n"}
            return httpx2.Response(200, json={"url": f"{ENDPOINT}/datasets/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        parts = path.strip("/").split("/")
        if path.startswith("/api/datasets/") and parts[4] == "tree":  # /api/datasets/ORG/NAME/tree/REV[/PATH]
            repo_id, prefix = f"{parts[2]}/{parts[3]}", "/".join(parts[6:])
            entries = [e for e in self.tree(repo_id) if not prefix or e["path"].startswith(prefix + "/")]
            return httpx2.Response(200, json=entries)
        if path.startswith("/api/datasets/") and parts[4] == "preupload":
            files = json.loads(request.read())["files"]
            return httpx2.Response(200, json={"files": [
                {"path": f["path"], "uploadMode": "lfs" if f["path"].endswith(LFS_EXTENSIONS) else "regular",
                 "shouldIgnore": False} for f in files]})
        if path.endswith(".git/info/lfs/objects/batch"):
            objects = json.loads(request.read())["objects"]
            return httpx2.Response(200, json={"transfer": "basic", "objects": [
                {"oid": o["oid"], "size": o["size"],
                 **({} if o["oid"] in self.lfs_objects else
                    {"actions": {"upload": {"href": f"https://upload.test/{o['oid']}"}}})} for o in objects]})
        if path.startswith("/api/datasets/") and parts[4] == "commit":
            repo_id = f"{parts[2]}/{parts[3]}"
            if self.fail_commit_number == len(self.commits) + 1:
                self.fail_commit_number = None
                return httpx2.Response(400, json={"error": "Bad request - simulated failure"})
            lines = [json.loads(line) for line in request.read().splitlines() if line.strip()]
            commit = {"repo": repo_id, "summary": lines[0]["value"]["summary"], "adds": [], "deletes": []}
            files = self.repos[repo_id]
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "lfsFile":
                    files[value["path"]] = self.lfs_objects[value["oid"]]
                elif line["key"] == "deletedFile":
                    files.pop(value["path"])
                    commit["deletes"].append(value["path"])
                    continue
                commit["adds"].append(value["path"])
            self.commits.append(commit)
            oid = hashlib.sha1(str(len(self.commits)).encode()).hexdigest()
            return httpx2.Response(200, json={"commitUrl": f"{ENDPOINT}/datasets/{repo_id}/commit/{oid}",
                                              "commitOid": oid})
        return httpx2.Response(404, json={"error": f"fake hub: no route for {method} {path}"})

