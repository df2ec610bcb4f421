"""Issue 11 item 5: translate never writes over its inputs; checkpoint errors say what the file is."""

from pathlib import Path

import pytest

from kdpipe.errors import DatasetError
from kdpipe.pipeline.teacher.formats import export
from kdpipe.pipeline.teacher.load import build_builtin
from kdpipe.trainers.core.checkpoint import TrainCheckpointError
from kdpipe.trainers.translate import check_output_dir, load_student


def test_output_dir_that_is_or_contains_an_input_is_refused(tmp_path):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    a, b = photos / "a.png", photos / "sub" / "b.png"
    for f in (a, b):
        f.write_bytes(b"user data")
    for out in (photos, tmp_path, photos / "sub", Path(str(photos) + "/./")):
        with pytest.raises(DatasetError, match="contains the input .* would overwrite your images"):
            check_output_dir(out, [a, b])
    check_output_dir(tmp_path / "out", [a, b])  # a new directory is fine
    check_output_dir(photos / "sub" / "out", [a, b])  # so is one beside the inputs
    assert a.read_bytes() == b"user data"


def test_checkpoint_errors_name_what_the_file_is(tmp_path):
    G, D = build_builtin("random-16")
    ada = export.write_nvlabs_pytorch_pkl(tmp_path / "ffhq.pkl", G, D)
    rosi = export.write_rosinality_pt(tmp_path / "550000.pt", G, D)
    for path, fmt in ((ada, "nvlabs-pytorch"), (rosi, "rosinality")):
        with pytest.raises(TrainCheckpointError, match=f"is a StyleGAN2 teacher \\({fmt}\\), not a trainer "
                                                       "checkpoint") as err:
            load_student(path)
        assert "delete" not in str(err.value)
    with pytest.raises(TrainCheckpointError, match="is a directory \\(a training run\\?\\); pass one of its"):
        load_student(tmp_path)
    (tmp_path / "ckpt-000010.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(TrainCheckpointError, match="unreadable or corrupt") as err:
        load_student(tmp_path / "ckpt-000010.pt")
    assert "delete" not in str(err.value)
