"""The Omniglot / image-folder suite: episodes, splits, rotations, zips, the decode cache, errors."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metaopt_tuner.errors import ConfigError, DataError, SuiteError
from metaopt_tuner.tasks import get_suite, image_cache, list_suites
from metaopt_tuner.tasks.omniglot import ImageFolderSuite, OmniglotSuite
from metaopt_tuner.training import MetaTrainer, TrainConfig

SIZE = 8
ALPHABETS = {"Alpha": 4, "Beta": 3, "Gamma": 5, "Delta": 2}  # alphabet -> number of characters
IMAGES = 6


def _level(a: int, c: int) -> int:
    """The gray level that identifies character c of alphabet a (background of every drawing)."""
    return 10 + 10 * (a * 5 + c)


def make_tree(root: Path, alphabets: dict[str, int] = ALPHABETS, images: int = IMAGES,
              ext: str = "png") -> Path:
    """``root/<alphabet>/characterNN/NN.png``: a class's gray level plus a mark per drawing."""
    for a, (name, chars) in enumerate(sorted(alphabets.items())):
        for c in range(chars):
            folder = root / name / f"character{c + 1:02d}"
            folder.mkdir(parents=True)
            for i in range(images):
                arr = np.full((SIZE, SIZE), _level(a, c), dtype=np.uint8)
                arr[0, i % SIZE] = 255  # drawing i: a white pixel in the first row ...
                arr[SIZE - 1, 0] = 0  # ... and a black corner, so rotations are visible
                Image.fromarray(arr).save(folder / f"{i:02d}.{ext}")
    return root


def class_levels(x: torch.Tensor) -> torch.Tensor:
    """The identifying gray level of every image ``[..., 1, S, S]`` (its median pixel)."""
    flat = (x * 255).round().flatten(-3)
    return flat.median(-1).values


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convolutions on a loaded 2-core machine: a second intra-op thread only adds contention
    # (measured 30x slower meta-gradients with 2 threads under load).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    image_cache._MEMO.clear()
    return make_tree(tmp_path / "data")


def suite(tree: Path, tmp_path: Path, **options) -> OmniglotSuite:
    defaults = dict(data_dir=str(tree), image_size=SIZE, invert=False, cache_dir=str(tmp_path / "cache"),
                    ways=3, shots=2, query=2, val_fraction=0, test_fraction=0, rotations=False)
    return get_suite("omniglot", **{**defaults, **options})


def test_registered_and_alias():
    assert {"omniglot", "image-folder"} <= set(list_suites())


def test_episode_shapes_labels_and_classes(tree, tmp_path):
    s = suite(tree, tmp_path, ways=4, shots=2, query=3)
    b = s.sample(50, torch.Generator().manual_seed(0))
    assert b.x_support.shape == (50, 8, 1, SIZE, SIZE) and b.x_query.shape == (50, 12, 1, SIZE, SIZE)
    assert b.x_support.dtype == torch.float32
    assert 0 <= float(b.x_support.min()) <= float(b.x_support.max()) <= 1
    assert b.y_support.dtype == torch.int64
    assert torch.equal(b.y_support[0], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    ls, lq = class_levels(b.x_support), class_levels(b.x_query)
    first_class = set()
    for t in range(50):
        # every label is one character, the same in support and query, and characters differ
        levels = [set(ls[t][b.y_support[t] == k].tolist()) | set(lq[t][b.y_query[t] == k].tolist())
                  for k in range(4)]
        assert all(len(v) == 1 for v in levels)
        assert len(set().union(*levels)) == 4
        first_class.add(levels[0].pop())
        # the K + Q drawings of a class are distinct (their marks differ)
        both = torch.cat([b.x_support[t], b.x_query[t]])
        ys = torch.cat([b.y_support[t], b.y_query[t]])
        for k in range(4):
            marks = both[ys == k][:, 0, 0].argmax(-1)
            assert len(set(marks.tolist())) == 5
    assert len(first_class) > 5  # label 0 is a different character from episode to episode


def test_sampling_draws_only_from_the_generator(tree, tmp_path):
    s = suite(tree, tmp_path)
    torch.manual_seed(1)
    a = s.sample(7, torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    b = s.sample(7, torch.Generator().manual_seed(3))
    assert torch.equal(a.x_support, b.x_support) and torch.equal(a.y_query, b.y_query)
    c = s.sample(7, torch.Generator().manual_seed(4))
    assert not torch.equal(a.x_support, c.x_support)
    f1, f2 = s.fixed_tasks(5, split="train", seed=0), s.fixed_tasks(5, split="train", seed=0)
    assert torch.equal(f1.x_query, f2.x_query)


def test_options_rebuild_the_suite(tree, tmp_path):
    s = suite(tree, tmp_path, within_alphabet=True, test_alphabets=["Gamma"])
    again = get_suite("omniglot", **s.options())
    assert again.options() == s.options()
    assert torch.equal(s.fixed_tasks(4, "test").x_support, again.fixed_tasks(4, "test").x_support)
    import json

    json.dumps(s.options())


def test_explicit_splits_are_disjoint_and_train_takes_the_rest(tree, tmp_path):
    s = suite(tree, tmp_path, val_alphabets=["Beta"], test_alphabets="Gamma,Delta", ways=2)
    assert s.split_alphabets() == {"train": ["Alpha"], "val": ["Beta"], "test": ["Delta", "Gamma"]}
    assert s.split_sizes() == {"train": 4, "val": 3, "test": 7}
    gamma_delta = {_level(a, c) for a, n in ((2, 2), (3, 5)) for c in range(n)}
    test = s.sample(40, torch.Generator().manual_seed(0), split="test")
    assert set(class_levels(test.x_support).flatten().tolist()) <= gamma_delta
    with pytest.raises(ConfigError, match="both train and test"):
        suite(tree, tmp_path, train_alphabets=["Alpha"], test_alphabets=["Alpha"]).load()
    with pytest.raises(DataError, match="Omega"):
        suite(tree, tmp_path, test_alphabets=["Omega"]).load()


def test_the_all_split_draws_from_every_class(tree, tmp_path):
    s = suite(tree, tmp_path, val_alphabets=["Beta"], test_alphabets="Gamma,Delta", ways=2)
    assert s.split_summary("test") == {"num_classes": 7, "num_examples": 7 * IMAGES}
    assert s.split_summary("all") == {"num_classes": 14, "num_examples": 14 * IMAGES}
    every = {_level(a, c) for a, n in enumerate(ALPHABETS[k] for k in sorted(ALPHABETS)) for c in range(n)}
    drawn = s.sample(200, torch.Generator().manual_seed(0), split="all")
    assert set(class_levels(drawn.x_support).flatten().tolist()) == every


def test_fraction_split_is_seeded(tree, tmp_path):
    a = suite(tree, tmp_path, val_fraction=0.25, test_fraction=0.25, split_seed=0).split_alphabets()
    b = suite(tree, tmp_path, val_fraction=0.25, test_fraction=0.25, split_seed=0).split_alphabets()
    assert a == b
    assert sorted(a["train"] + a["val"] + a["test"]) == sorted(ALPHABETS)
    assert len(a["val"]) == len(a["test"]) == 1
    seeds = {tuple(suite(tree, tmp_path, val_fraction=0.25, test_fraction=0.25,
                         split_seed=k).split_alphabets()["test"]) for k in range(8)}
    assert len(seeds) > 1
    by_class = suite(tree, tmp_path, split_by="class", test_fraction=0.3, ways=2).split_sizes()
    assert by_class["test"] == round(0.3 * 14) and by_class["train"] == 14 - by_class["test"]


def test_within_alphabet_episodes_stay_in_one_alphabet(tree, tmp_path):
    s = suite(tree, tmp_path, within_alphabet=True, ways=3, shots=1, query=1)
    b = s.sample(60, torch.Generator().manual_seed(0))
    alphabet_of = {_level(a, c): a for a, n in enumerate(ALPHABETS[k] for k in sorted(ALPHABETS))
                   for c in range(n)}
    seen = set()
    for levels in class_levels(b.x_support).tolist():
        alphabets = {alphabet_of[int(v)] for v in levels}
        assert len(alphabets) == 1
        seen |= alphabets
    assert seen == {0, 1, 3}  # Alpha, Beta, Gamma have >= 3 characters; Delta (2) never qualifies
    with pytest.raises(DataError, match="largest in the train split has 5"):
        suite(tree, tmp_path, within_alphabet=True, ways=6).sample(1, torch.Generator())


def test_rotations_add_training_classes_only(tree, tmp_path):
    s = suite(tree, tmp_path, rotations=True, test_alphabets=["Gamma"], ways=5, shots=1, query=1)
    assert s.split_sizes() == {"train": 4 * 9, "val": 0, "test": 5}
    upright = lambda x: bool((x[..., -1, 0] * 255).round().eq(0).all())  # noqa: E731
    train = s.sample(40, torch.Generator().manual_seed(0))
    corners = (train.x_support[:, :, 0, -1, 0] * 255).round()
    assert bool((corners != 0).any()) and bool((corners == 0).any())  # some rotated, some not
    assert upright(s.sample(40, torch.Generator().manual_seed(0), split="test").x_support)
    # a rotated class is rotated the same way in support and query
    for t in range(40):
        for k in range(5):
            sx, qx = train.x_support[t, train.y_support[t] == k], train.x_query[t, train.y_query[t] == k]
            assert torch.equal(sx[..., -1, 0] == 0, qx[..., -1, 0] == 0)


def test_eval_rotations_make_rotated_test_characters_classes(tree, tmp_path):
    s = suite(tree, tmp_path, rotations=False, eval_rotations=True, test_alphabets=["Gamma"],
              ways=5, shots=1, query=1)
    assert s.split_sizes() == {"train": 9, "val": 0, "test": 4 * 5}
    assert s.options()["eval_rotations"] is True
    corners = (s.sample(40, torch.Generator().manual_seed(0), split="test").x_support[..., -1, 0] * 255)
    assert bool((corners.round() != 0).any())  # some test classes are rotated copies
    # within-alphabet: Gamma's 5 characters become 20 classes, enough for 12-way episodes
    within = suite(tree, tmp_path, rotations=False, eval_rotations=True, test_alphabets=["Gamma"],
                   within_alphabet=True, ways=12, shots=1, query=1)
    assert within.sample(2, torch.Generator().manual_seed(0), split="test").y_support.shape == (2, 12)


def test_zip_and_folder_give_the_same_images(tree, tmp_path):
    archive = tmp_path / "images_background.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*.png")):
            zf.write(path, "images_background/" + path.relative_to(tree).as_posix())
    from_folder = suite(tree, tmp_path).fixed_tasks(5, "train")
    from_zip = suite(archive, tmp_path).fixed_tasks(5, "train")
    assert torch.equal(from_folder.x_support, from_zip.x_support)
    # a folder holding only zips (Omniglot's downloads) reads them directly
    zips_only = tmp_path / "zips"
    zips_only.mkdir()
    archive.rename(zips_only / archive.name)
    image_cache._MEMO.clear()
    assert torch.equal(suite(zips_only, tmp_path).fixed_tasks(5, "train").x_support, from_folder.x_support)


def test_cache_is_reused_and_invalidated(tree, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = suite(tree, tmp_path).fixed_tasks(3, "train")
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    image_cache._MEMO.clear()

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(image_cache, "_decode", no_decode)
    assert torch.equal(suite(tree, tmp_path).fixed_tasks(3, "train").x_support, first.x_support)
    monkeypatch.undo()
    image_cache._MEMO.clear()
    extra = tree / "Alpha" / "character01" / "99.png"
    Image.fromarray(np.zeros((SIZE, SIZE), dtype=np.uint8)).save(extra)
    s = suite(tree, tmp_path)
    assert int(s.load()._coll.counts[0]) == IMAGES + 1
    assert [p.name for p in cache.glob("*.safetensors")] != [f.name for f in files]
    assert len(list(cache.glob("*.safetensors"))) == 1  # the stale file is gone
    # a corrupted cache file is decoded again, not an error
    image_cache._MEMO.clear()
    only = next(cache.glob("*.safetensors"))
    only.write_bytes(b"garbage")
    assert int(suite(tree, tmp_path).load()._coll.counts[0]) == IMAGES + 1


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("METAOPT_CACHE_DIR", raising=False)
    data = tmp_path / "data"
    data.mkdir()
    assert image_cache.default_cache_dir(data) == data / ".metaopt-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data.chmod(0o555)
    try:
        assert image_cache.default_cache_dir(data) == tmp_path / "xdg" / "metaopt-tuner"
    finally:
        data.chmod(0o755)
    monkeypatch.setenv("METAOPT_CACHE_DIR", str(tmp_path / "env"))
    assert image_cache.default_cache_dir(data) == tmp_path / "env"


@pytest.mark.parametrize(
    "setup, options, message",
    [
        ("missing", {}, "does not exist"),
        ("empty", {}, "no images found"),
        ("tree", {"ways": 20}, "has 14 classes, fewer than ways = 20"),
        ("tree", {"shots": 5, "query": 2}, "has 6 images but shots \\+ query = 5 \\+ 2 = 7"),
        ("tree", {"alphabets": ["Klingon"]}, "Klingon"),
        ("tree", {"test_fraction": 0.5, "val_fraction": 0.5}, "too few"),
        ("none", {}, "needs a data folder"),
    ],
)
def test_clear_data_errors(tmp_path, setup, options, message):
    image_cache._MEMO.clear()
    data = tmp_path / "data"
    if setup == "empty":
        (data / "nothing").mkdir(parents=True)
        (data / "README.txt").write_text("no images")
    elif setup == "tree":
        make_tree(data)
    s = suite(data, tmp_path, **options)
    if setup == "none":
        s = get_suite("omniglot")
    with pytest.raises(DataError, match=message):
        s.sample(2, torch.Generator())


def test_bad_options_are_config_errors(tree, tmp_path):
    for bad in ({"ways": 0}, {"shots": -1}, {"query": 1.5}, {"channels": 2}, {"split_by": "x"},
                {"test_fraction": 1.0}):
        with pytest.raises(ConfigError):
            suite(tree, tmp_path, **bad)
    with pytest.raises(ConfigError, match="unknown split"):
        suite(tree, tmp_path).sample(1, torch.Generator(), split="dev")


def test_jitter_changes_training_images_only(tree, tmp_path):
    jitter = {"jitter_degrees": 20, "jitter_scale": 0.2, "jitter_shift": 0.3}
    plain = suite(tree, tmp_path, test_alphabets=["Gamma"])
    jittered = suite(tree, tmp_path, test_alphabets=["Gamma"], **jitter)
    a, b = (x.sample(6, torch.Generator().manual_seed(5)) for x in (plain, jittered))
    # the same episodes (jitter draws after the episode), different pixels
    assert torch.equal(a.y_support, b.y_support) and torch.equal(a.y_query, b.y_query)
    assert not torch.allclose(a.x_support, b.x_support)
    assert 0 <= float(b.x_support.min()) and float(b.x_support.max()) <= 1
    again = jittered.sample(6, torch.Generator().manual_seed(5))
    assert torch.equal(again.x_query, b.x_query)  # reproducible from the generator
    test_a, test_b = (x.sample(6, torch.Generator().manual_seed(5), split="test")
                      for x in (plain, jittered))
    assert torch.equal(test_a.x_support, test_b.x_support)
    assert torch.equal(test_a.x_query, test_b.x_query)
    assert get_suite("omniglot", **jittered.options()).options() == jittered.options()
    for bad in ({"jitter_degrees": -1}, {"jitter_scale": 1.0}, {"jitter_shift": 2},
                {"jitter_degrees": float("nan")}, {"jitter_shift": "x"}):
        with pytest.raises(ConfigError, match="jitter_"):
            suite(tree, tmp_path, **bad)


def test_random_affine_moves_content_as_asked():
    from metaopt_tuner.tasks.augment import random_affine

    img = torch.zeros(3, 1, 16, 16)
    img[:, :, 6:10, 6:10] = 1.0
    gen = torch.Generator().manual_seed(0)
    assert random_affine(img, gen, 0, 0, 0) is img
    copies = img[:1].expand(64, 1, 16, 16).contiguous()
    shifted = random_affine(copies, gen, 0, 0, 0.25)
    cols = torch.arange(16.0)
    centre_x = (shifted.sum(dim=(1, 2)) * cols).sum(-1) / shifted.sum(dim=(1, 2, 3))
    # every copy its own draw: shifts up to a quarter of half the width, at most 2 pixels, varying
    assert float((centre_x - 7.5).abs().max()) <= 2.0 + 1e-4 and float(centre_x.std()) > 0.3
    # a shift keeps the mass (the square stays inside); a scale changes it
    assert torch.allclose(shifted.sum(dim=(1, 2, 3)), torch.full((64,), 16.0), atol=1e-3)
    scaled = random_affine(copies, gen, 0, 0.5, 0)
    assert float(scaled.sum(dim=(1, 2, 3)).std()) > 1.0


def test_loss_and_metric_per_example(tree, tmp_path):
    s = suite(tree, tmp_path)
    pred = torch.randn(4, 6, 3)
    y = torch.randint(0, 3, (4, 6))
    loss = s.loss_per_example(pred, y)
    assert loss.shape == (4, 6)
    assert torch.allclose(loss, F.cross_entropy(pred.permute(0, 2, 1), y, reduction="none"))
    assert torch.equal(s.metric_per_example(pred, y), (pred.argmax(-1) == y).float())
    per_task = torch.vmap(s.loss_per_example)(pred, y)
    assert torch.allclose(per_task, loss)
    assert s.metric_name == "accuracy" and s.metric_higher_is_better
    spec = s.model_spec()
    assert spec["name"] == "convnet" and spec["kwargs"]["num_classes"] == 3


def test_image_folder_alias_reads_rgb_jpgs(tmp_path):
    image_cache._MEMO.clear()
    data = make_tree(tmp_path / "jpgs", {"A": 3, "B": 3}, images=4, ext="jpg")
    s = get_suite("image-folder", data_dir=str(data), image_size=SIZE, ways=2, shots=1, query=1,
                  test_alphabets=["B"], cache_dir=str(tmp_path / "c"))
    assert isinstance(s, ImageFolderSuite) and not s.rotations and s.channels == 3
    b = s.sample(2, torch.Generator(), split="test")
    assert b.x_support.shape == (2, 2, 3, SIZE, SIZE)
    assert s.model_spec()["kwargs"]["in_channels"] == 3


def test_image_folder_speaks_of_groups_and_takes_the_alphabet_names(tmp_path):
    """The image-folder suite's options and messages say groups (the Omniglot suite's say
    alphabets); the alphabet names still work, so older artifacts and commands do."""
    image_cache._MEMO.clear()
    data = make_tree(tmp_path / "jpgs", {"A": 3, "B": 3, "C": 3}, images=4, ext="jpg")
    common = dict(data_dir=str(data), image_size=SIZE, ways=2, shots=1, query=1,
                  cache_dir=str(tmp_path / "c"))
    s = get_suite("image-folder", val_groups="B", test_groups=["C"], within_group=True, split_by="group",
                  **common)
    assert s.split_groups() == {"train": ["A"], "val": ["B"], "test": ["C"]}
    options = s.options()
    assert options["test_groups"] == ["C"] and options["within_group"] is True
    assert options["split_by"] == "group"
    assert not [name for name in options if "alphabet" in name]
    # the old names are aliases, and rebuilding from options() gives the same splits
    old = get_suite("image-folder", val_alphabets=["B"], test_alphabets="C", within_alphabet=True,
                    split_by="alphabet", **common)
    assert old.options() == options
    assert get_suite("image-folder", **options).split_groups() == s.split_groups()
    with pytest.raises(ConfigError, match="test_alphabets is the old name of test_groups"):
        get_suite("image-folder", test_groups=["B"], test_alphabets=["C"], **common)
    with pytest.raises(SuiteError, match="does not accept option.*bogus"):
        get_suite("image-folder", bogus=1, **common)
    # its messages name its own options
    with pytest.raises(DataError, match=r"test_groups names Z, not in .*; groups there: A, B, C"):
        get_suite("image-folder", test_groups=["Z"], **common).load()
    with pytest.raises(DataError, match="exclude_groups names Z.*groups there"):
        get_suite("image-folder", exclude_groups=["Z"], **common).load()
    with pytest.raises(ConfigError, match="split_by must be 'group', 'class' or 'auto'"):
        get_suite("image-folder", split_by="x", **common)
    with pytest.raises(DataError, match="needs a data folder.*<group>/<class>/\\*.jpg"):
        get_suite("image-folder").load()
    # Omniglot keeps its own words
    omniglot = get_suite("omniglot", test_alphabets=["C"], split_by="group", **common)
    assert omniglot.options()["split_by"] == "alphabet" and omniglot.options()["test_alphabets"] == ["C"]
    with pytest.raises(DataError, match="test_alphabets names Z.*alphabets there"):
        get_suite("omniglot", test_alphabets=["Z"], **common).load()


def test_image_folder_describes_its_group_options():
    from metaopt_tuner.tasks.describe import describe_suite

    _, options = describe_suite("image-folder")
    by = {o.name: o for o in options}
    for name in ("within_group", "train_groups", "val_groups", "test_groups", "groups", "exclude_groups"):
        assert by[name].help and "alphabet" not in by[name].help.lower(), by[name]
    assert not [name for name in by if "alphabet" in name]
    assert not [o.name for o in options if "alphabet" in (o.help or "").lower()]
    assert "group" in by["split_by"].help
    assert not [o.name for o in options if (o.help or "").startswith("Args:")]  # not prose
    assert "test_alphabets" in {o.name for o in describe_suite("omniglot")[1]}


def test_meta_training_runs_and_paths_agree(tmp_path):
    image_cache._MEMO.clear()
    data = make_tree(tmp_path / "d", {"A": 3, "B": 3, "C": 3}, images=4)
    opts = dict(data_dir=str(data), image_size=16, filters=4, ways=2, shots=1, query=1,
                cache_dir=str(tmp_path / "c"), val_alphabets=["B"], test_alphabets=["C"])
    s = get_suite("omniglot", **opts)
    batch = s.sample(3, torch.Generator().manual_seed(0)).to(dtype=torch.float64)
    from metaopt_tuner.learners import build_learner

    grads = {}
    for mode in ("batched", "loop"):  # (vmap against both: the core learner tests)
        torch.manual_seed(0)
        learner = build_learner("maml", s, inner_steps=1, inner_lr=0.1, batching=mode).double()
        grads[mode] = learner.meta_gradient(batch).grads
    for k, g in grads["batched"].items():
        assert torch.allclose(g, grads["loop"][k], atol=1e-9), k
    result = MetaTrainer(TrainConfig(suite="omniglot", suite_options=opts, learner="metasgd", iterations=2,
                                     meta_batch=2, eval_every=2, eval_tasks=4, log_every=1),
                         None, progress=False).run()
    assert 0.0 <= result.final_metric <= 1.0
    assert all(np.isfinite(r["loss"]) for r in result.history if "loss" in r)


def test_cli_train_with_data_dir(tmp_path, capsys):
    from cli.app import main

    image_cache._MEMO.clear()
    data = make_tree(tmp_path / "d", {"A": 3, "B": 3, "C": 3}, images=4)
    args = ["train", "--suite", "omniglot", "--data-dir", str(data), "--learner", "fomaml",
            "--iterations", "2", "--meta-batch", "2", "--eval-tasks", "2", "--no-progress",
            "-o", "ways=2", "-o", "shots=1", "-o", "query=1", "-o", "image_size=16", "-o", "filters=4",
            "-o", f"cache_dir={tmp_path / 'c'}", "-o", "val_alphabets=B", "-o", "test_alphabets=C"]
    try:
        main(args + ["--out", str(tmp_path / "run")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert "held-out accuracy" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["train", "--suite", "omniglot", "--data-dir", str(tmp_path / "nowhere"), "--no-progress",
              "--out", str(tmp_path / "run2")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the shared data
@pytest.fixture(scope="module")
def omniglot_dir() -> Path:
    env = os.environ.get("METAOPT_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    path = base / "omniglot"
    if not (path / "images_background_small1.zip").is_file():
        pytest.skip("shared Omniglot data not present")
    return path


def test_shared_minimal_splits(omniglot_dir):
    # the default cache (beside the data, or the user cache when that is read-only) makes re-runs fast
    small1 = get_suite("omniglot", data_dir=str(omniglot_dir / "images_background_small1.zip"),
                       val_fraction=0, test_fraction=0)
    assert small1.split_alphabets()["train"] == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert small1.split_sizes()["train"] == 4 * 136
    assert small1.load()._coll.images.shape == (2720, 1, 28, 28)
    small2 = get_suite("omniglot", data_dir=str(omniglot_dir / "images_background_small2.zip"),
                       test_alphabets=["Japanese_(katakana)", "Sanskrit", "Tagalog"], ways=20,
                       within_alphabet=True)
    assert small2.split_alphabets()["train"] == ["Greek", "Latin"]
    b = small2.fixed_tasks(3, "test")
    assert b.x_support.shape == (3, 20, 1, 28, 28) and b.x_query.shape == (3, 100, 1, 28, 28)
    both = image_cache.scan_collection(omniglot_dir)  # Greek and Latin appear in both zips: counted once
    assert len({e.group for e in both}) == 8 and len(both) == 2720 + 3120 - 20 * (24 + 26)
