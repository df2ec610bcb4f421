"""``kdpipe publish OUT/<task> hf://datasets/ORG/NAME`` against an in-memory hub behind huggingface_hub's own client
(tests/_fake_hub.py: only the HTTP transport is fake): upload, resume after a failed commit, verification from
the hub's hashes, another dataset refused or replaced, URL and token errors."""

from __future__ import annotations

import pytest

from _fake_hub import FakeHub
from kdpipe.errors import ConfigError, DatasetError
from kdpipe.pipeline import hub

URL = "hf://datasets/kd-org/digits"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A finished style-mix dataset: 3 shards, manifest, card, SHA256SUMS (6 files)."""
    from kdpipe.pipeline.generate import generate

    out = tmp_path_factory.mktemp("out")
    generate("style-mix", out, overrides=["render.shard_size=2"], log=lambda m: None,
             cli={"teacher.generator": "builtin:random-16", "render.n": 6, "runtime.progress": False})
    return out / "style-mix"


@pytest.fixture
def fake(monkeypatch):
    fake = FakeHub()
    fake.install(monkeypatch)
    monkeypatch.setattr(hub, "FILES_PER_COMMIT", 2)
    yield fake
    fake.uninstall()


def local_files(dataset):
    return {str(p.relative_to(dataset)): p.read_bytes() for p in dataset.rglob("*")
            if p.is_file() and (p.parent.name == "shards" or p.name in ("manifest.parquet", "README.md", "SHA256SUMS"))}


def test_upload_then_rerun_skips_everything(dataset, fake):
    report = hub.publish_to_hub(dataset, URL, log=lambda m: None)
    assert report == {"copied": 6, "skipped": 0}
    files = local_files(dataset)
    assert {p: b for p, b in fake.repos["kd-org/digits"].items() if p != ".gitattributes"} == files
    assert [len(c["adds"]) for c in fake.commits] == [2, 2, 1, 1]  # 5 data files in batches of 2, then the sums
    assert fake.commits[-1]["adds"] == ["SHA256SUMS"]
    assert fake.puts == 4  # 3 shards + the parquet manifest went through LFS; README and SHA256SUMS inline
    assert hub.publish_to_hub(dataset, URL, log=lambda m: None) == {"copied": 0, "skipped": 6}
    assert len(fake.commits) == 4


def test_a_failed_commit_resumes_with_the_missing_files_only(dataset, fake):
    fake.fail_commit_number = 2
    with pytest.raises(DatasetError, match="re-run publish"):
        hub.publish_to_hub(dataset, URL, log=lambda m: None)
    assert len(fake.commits) == 1 and "SHA256SUMS" not in fake.repos["kd-org/digits"]
    first = set(fake.commits[0]["adds"])
    assert hub.publish_to_hub(dataset, URL, log=lambda m: None) == {"copied": 4, "skipped": 2}
    assert not first & {p for c in fake.commits[1:] for p in c["adds"]}
    assert fake.commits[-1]["adds"] == ["SHA256SUMS"]


def test_a_file_the_hub_stored_wrongly_fails_verification(dataset, fake, monkeypatch):
    handle = fake.handle

    def corrupting(request):  # the hub keeps a different byte for the first LFS upload
        response = handle(request)
        if request.method == "PUT" and fake.puts == 1:
            oid = request.url.path.strip("/")
            fake.lfs_objects[oid] = fake.lfs_objects[oid][:-1] + b"\x01"
        return response

    monkeypatch.setattr(fake, "handle", corrupting)
    with pytest.raises(DatasetError, match=r"hub's hash of 1 file\(s\) differs"):
        hub.publish_to_hub(dataset, URL, log=lambda m: None)


def test_another_dataset_is_refused_unless_replace(dataset, fake):
    fake.repos["kd-org/digits"] = {".gitattributes": b"", "SHA256SUMS": b"0" * 64 + b"  old.tar\n",
                                   "old.tar": b"old"}
    with pytest.raises(DatasetError, match="holds another dataset.*--replace"):
        hub.publish_to_hub(dataset, URL, log=lambda m: None)
    assert not fake.commits
    assert hub.publish_to_hub(dataset, URL, log=lambda m: None, replace=True)["copied"] == 6
    assert sorted(fake.commits[0]["deletes"]) == ["SHA256SUMS", "old.tar"] and not fake.commits[0]["adds"]
    assert set(fake.repos["kd-org/digits"]) == {".gitattributes", *local_files(dataset)}


def test_cli_publishes_to_a_folder_of_the_repo(dataset, fake, cli):
    res = cli("publish", dataset, URL + "/style-mix")
    assert res.exit_code == 0, res.output
    assert "published 6 file(s), 0 already present" in res.stdout
    assert "style-mix/shards/style-mix-000000.tar" in fake.repos["kd-org/digits"]


def test_bad_url_and_missing_token_are_one_line_errors(dataset, monkeypatch, tmp_path, cli):
    for url in ("hf://models/kd-org/x", "hf://datasets/only-org", "hf://datasets/a/b c"):
        with pytest.raises(ConfigError, match="hf://datasets/ORG/NAME"):
            hub.parse_hub_url(url)
    assert hub.parse_hub_url("hf://datasets/o/n@dev/sub/dir") == hub.HubTarget("o/n", "dev", "sub/dir")
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # as on a machine without a saved login
    res = cli("publish", dataset, URL)
    assert res.exit_code == 2 and "no Hugging Face token" in res.stderr
