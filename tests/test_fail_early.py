"""Checks that depend only on the configuration and the data run before the first iteration."""

from __future__ import annotations

import pytest

from .helpers import run_cli
from .test_omniglot import make_tree


def test_a_validation_split_too_narrow_for_the_episodes_fails_before_training(tmp_path, capsys):
    root = make_tree(tmp_path / "tree")  # 14 classes: a 0.1 share for validation is 1 class
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--suite", "omniglot", "--data-dir", str(root),
                           "-o", "ways=3", "-o", "split_by=class", "-o", "val_fraction=0.1",
                           "-o", "test_fraction=0", "-o", "image_size=16", "-o", "cache=false",
                           "-o", "filters=4", "--iterations", "50", "--no-progress",
                           "--out", str(out))
    assert code == 2 and "val split" in err and "fewer than ways = 3" in err, err
    assert err.count("\n") == 1
    # the check ran before anything was trained or written
    assert not out.exists()


def test_training_without_a_validation_split_goes_on(tmp_path, capsys):
    root = make_tree(tmp_path / "tree")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="no validation tasks"):
        code, _, err = run_cli(capsys, "train", "--suite", "omniglot", "--data-dir", str(root),
                               "-o", "ways=3", "-o", "split_by=class", "-o", "val_fraction=0",
                               "-o", "test_fraction=0", "-o", "image_size=16", "-o",
                               "cache=false", "-o", "filters=4", "--iterations", "2",
                               "--no-progress", "--out", str(out))
    assert code == 0, err
    assert (out / "artifact").is_dir()


def test_a_flat_class_folder_of_photos_trains_with_no_option(tmp_path, capsys):
    """``photos/<class>/*.png`` (no group level): the image-folder suite splits its classes and
    says so in one warning line, instead of 'has 1 alphabets: too few to hold out'."""
    tree = make_tree(tmp_path / "tree", {"Only": 12})
    flat = tmp_path / "photos"
    (tree / "Only").rename(flat)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--suite", "image-folder", "--data-dir", str(flat),
                           "-o", "ways=2", "-o", "val_fraction=0.2", "-o", "image_size=16",
                           "-o", "cache=false", "-o", "filters=4", "--iterations", "2",
                           "--no-progress", "--out", str(out))
    assert code == 0, err
    assert "classes are split" in err and (out / "artifact").is_dir()
