"""Issue 11 items 4 and 7: publish writes only inside its destination, never over another dataset; the card's
front matter is real YAML with hub size categories, and verify parses it."""

import shutil

import pytest
import yaml

from kdpipe.errors import DatasetError
from kdpipe.fsutil import file_sha256
from kdpipe.pipeline.card import _size_category, check_card
from kdpipe.pipeline.publish import publish, verify

GEN = ["generate", "--task", "style-mix", "--generator", "builtin:random-16", "--no-progress",
       "--set", "render.shard_size=4", "-n", "8"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from typer.testing import CliRunner

    from kdpipe.cli import app

    out = tmp_path_factory.mktemp("pub")
    licence = 'card.license="NVIDIA \\"NC\\" licence: C:\\\\licences\\\\nc.txt"'
    res = CliRunner().invoke(app, [*GEN, "--out", str(out), "--set", licence])
    assert res.exit_code == 0, res.output
    return out / "style-mix"


def _quiet(*_):
    pass


def test_card_front_matter_is_yaml_that_verify_parses(dataset, tmp_path):
    card = (dataset / "README.md").read_text()
    meta = check_card(card, "README.md")
    assert meta["license_details"] == 'NVIDIA "NC" licence: C:\\licences\\nc.txt'
    assert meta["size_categories"] == ["n<1K"] and meta["kdpipe"]["truncation_cutoff"] is None
    assert meta["kdpipe"]["samples"] == 8 and yaml.safe_load(card.split("---\n")[1]) == meta
    assert [_size_category(n) for n in (999, 1000, 2_000_000, 10**13)] == ["n<1K", "1K<n<10K", "1M<n<10M", "n>1T"]
    with pytest.raises(DatasetError, match="front matter is not valid YAML"):
        check_card('---\nlicense_details: "a "b" c"\n---\n', "x")
    with pytest.raises(DatasetError, match="size category 'n>1M', which the hub rejects"):
        check_card("---\nsize_categories: [n>1M]\n---\n", "x")
    # A card broken after the fact (SHA256SUMS updated to match) is reported by verify.
    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    (copy / "README.md").write_text(card.replace("license: other", 'license: "other'))
    sums = (copy / "SHA256SUMS").read_text().splitlines()
    fixed = [f"{file_sha256(copy / 'README.md')}  README.md" if line.endswith("  README.md") else line for line in sums]
    (copy / "SHA256SUMS").write_text("\n".join(fixed) + "\n")
    assert any("front matter is not valid YAML" in p for p in verify(str(copy)))


def test_publish_refuses_another_dataset_unless_replace(dataset, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "shards").mkdir()
    (dest / "shards" / "old-000000.tar").write_bytes(b"stale")
    (dest / "README.md").write_text("the user's own readme\n")
    with pytest.raises(DatasetError, match="holds another dataset .* pass --replace"):
        publish(dataset, str(dest), log=_quiet)
    assert (dest / "README.md").read_text() == "the user's own readme\n"  # nothing written
    report = publish(dataset, str(dest), log=_quiet, replace=True)
    assert report["copied"] == 5 and not (dest / "shards" / "old-000000.tar").exists()
    assert verify(str(dest)) == [] and not list(tmp_path.glob("dest.kdpipe-*"))
    assert publish(dataset, str(dest), log=_quiet) == {"copied": 0, "skipped": 5}  # same dataset: resumes
    with pytest.raises(DatasetError, match="publish destination is empty"):
        publish(dataset, "  ", log=_quiet)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="destination '.*file' is a file"):
        publish(dataset, str(tmp_path / "file"), log=_quiet)


def test_sums_names_are_confined_to_the_dataset(dataset, tmp_path):
    copy = tmp_path / "src" / "style-mix"
    shutil.copytree(dataset, copy)
    secret = tmp_path / "src" / "secret.txt"
    secret.write_text("outside")
    sums = (copy / "SHA256SUMS").read_text()
    for name in ("../secret.txt", "/etc/passwd", "shards/../../secret.txt"):
        (copy / "SHA256SUMS").write_text(sums + f"{file_sha256(secret)}  {name}\n")
        with pytest.raises(DatasetError, match="is not a relative path inside the dataset"):
            verify(str(copy))
    # A symlink inside the dataset pointing outside it: refused by verify and publish.
    (copy / "shards" / "link.tar").symlink_to(secret)
    (copy / "SHA256SUMS").write_text(sums + f"{file_sha256(secret)}  shards/link.tar\n")
    assert any("is a symlink" in p for p in verify(str(copy)))
    from kdpipe.pipeline.publish import _copy_all, read_sums
    import fsspec

    fs = fsspec.filesystem("file")
    with pytest.raises(DatasetError, match="is a symlink"):
        _copy_all(copy, read_sums(fs, str(copy)), fs, str(tmp_path / "out"), "out", _quiet)
    assert not (tmp_path / "out" / "shards" / "link.tar").exists()
