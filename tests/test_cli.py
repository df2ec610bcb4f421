"""The `kdpipe` command mounts every job: generate/status/publish/verify/classify, train *, translate."""


def test_every_command_is_mounted(cli):
    top = cli("--help")
    for name in ("generate", "status", "publish", "verify", "classify", "train", "translate"):
        assert f" {name} " in top.stdout, name
    train = cli("train", "--help")
    assert train.exit_code == 0
    for name in ("pix2pixhd", "stargan2-kd", "stargan2"):
        assert f" {name} " in train.stdout, name


def test_status_of_a_directory_that_is_not_a_run(tmp_path, cli):
    res = cli("status", tmp_path)
    assert res.exit_code == 2 and "is not a kdpipe task directory" in res.stderr
