"""`metaopt download`: MD5 verification, atomic writes and a clear offline error (no network used)."""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cli.app import main
from metaopt_tuner.errors import ConfigError, DataError
from metaopt_tuner.tasks import download as dl


@pytest.fixture()
def mirror(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A local "server": a folder reached through file:// URLs, and the MD5s of its files."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    files = {}
    for name, payload in (("a.zip", b"first file" * 1000), ("b.zip", b"second")):
        (folder / name).write_bytes(payload)
        files[name] = hashlib.md5(payload).hexdigest()
    return folder.as_uri() + "/", files


@pytest.fixture()
def offline(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_download_verifies_md5_and_skips_good_files(mirror, tmp_path):
    base, files = mirror
    to = tmp_path / "out" / "nested"
    got = dl.download_files(files, base, to)
    assert [(f.path.name, f.fetched) for f in got] == [("a.zip", True), ("b.zip", True)]
    assert (to / "a.zip").read_bytes() == b"first file" * 1000 and dl.md5sum(to / "b.zip") == files["b.zip"]
    again = dl.download_files(files, base, to)
    assert not any(f.fetched for f in again)
    (to / "b.zip").write_bytes(b"damaged")  # a file with the wrong MD5 is fetched again
    assert [f.fetched for f in dl.download_files(files, base, to)] == [False, True]
    assert dl.md5sum(to / "b.zip") == files["b.zip"]


def test_md5_mismatch_leaves_nothing_behind(mirror, tmp_path):
    base, files = mirror
    to = tmp_path / "out"
    with pytest.raises(DataError, match="MD5 mismatch.*expected 0{32}, got " + files["a.zip"]):
        dl.download_files({"a.zip": "0" * 32}, base, to)
    assert list(to.iterdir()) == []


def test_offline_error_says_what_to_fetch(offline, tmp_path):
    with pytest.raises(DataError) as exc:
        dl.download_dataset("omniglot", tmp_path)
    message = str(exc.value)
    assert "offline" in message and "images_background.zip" in message
    assert "68d2efa1b9178cc56df9314c21c6e718" in message and "brendenlake/omniglot" in message
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="unknown data set"):
        dl.download_dataset("mnist", tmp_path)


def test_omniglot_table_matches_the_issue():
    ds = dl.DATASETS["omniglot"]
    assert ds.base_url.endswith("brendenlake/omniglot/master/python/")
    assert dict(ds.files) == {"images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
                              "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811"}


def test_cli_download_from_a_mirror(mirror, tmp_path, capsys, monkeypatch):
    base, files = mirror
    monkeypatch.setitem(dl.DATASETS, "omniglot", dl.Dataset("https://unused.invalid/", files))
    try:
        main(["download", "omniglot", "--to", str(tmp_path / "data"), "--base-url", base])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "a.zip: downloaded" in out and f"MD5 {files['a.zip']} ok" in out and "--data-dir" in out
    try:
        main(["download", "omniglot", "--to", str(tmp_path / "data"), "--base-url", base])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert "a.zip: already present" in capsys.readouterr().out


def test_cli_download_offline_is_one_line_exit_2(offline, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["download", "omniglot", "--to", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "offline" in err
