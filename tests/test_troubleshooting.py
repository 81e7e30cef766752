"""The Troubleshooting page quotes the messages the code prints: each scenario here makes one
happen (in a folder laid out as the page's commands assume) and checks that the page shows it
word for word, so a changed message cannot leave the page stale."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from .helpers import TinyImageSuite, run_cli

PAGE = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"


def on_page(message: str) -> None:
    text = " ".join(PAGE.read_text().split())
    assert " ".join(message.split()) in text, f"the Troubleshooting page does not show:\n{message}"


def cli_error(capsys, *args: str) -> str:
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    return err.strip()


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAOPT_HOME", str(tmp_path / ".home"))
    monkeypatch.setenv("METAOPT_CACHE_DIR", str(tmp_path / ".cache"))
    return tmp_path


def test_run_folders(here, capsys):
    run = here / "runs" / "sinusoid"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    on_page(cli_error(capsys, "train", "--suite", "sinusoid", "--out", "runs/sinusoid"))
    (here / "notarun").mkdir()
    (here / "notarun" / "x").write_text("")
    on_page(cli_error(capsys, "train", "--suite", "sinusoid", "--out", "notarun", "--iterations", "3"))
    (here / "afile").write_text("")
    on_page(cli_error(capsys, "train", "--suite", "sinusoid", "--out", "afile", "--iterations", "3"))


def test_missing_extras(here, capsys, monkeypatch):
    for module in ("mlflow", "prodigyopt", "psycopg2", "psycopg"):
        monkeypatch.setitem(sys.modules, module, None)
    err = cli_error(capsys, "publish", "sinusoid", "--name", "sinusoid-10step")
    on_page(err[:err.index("):") + 2])  # then the import error, which varies
    on_page(cli_error(capsys, "tune", "--suite", "sinusoid", "--optimizer", "prodigy", "--trials", "1"))
    on_page(cli_error(capsys, "tune", "--suite", "sinusoid", "--trials", "1",
                      "--storage", "postgresql://me@localhost:5432/studies"))


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="the page's example path is under /proc")
def test_a_storage_folder_that_cannot_be_made(here, capsys):
    on_page(cli_error(capsys, "tune", "--suite", "sinusoid", "--trials", "1",
                      "--storage", "sqlite:////proc/x/studies.db"))


def _flat_photos(root: Path, classes: int = 30) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(6):  # shots + query
            Image.fromarray(rng.integers(0, 256, (16, 16, 3)).astype("uint8")).save(folder / f"{index}.jpg")


def test_a_flat_image_folder(here, capsys):
    _flat_photos(here / "photos")
    common = ("train", "--suite", "image-folder", "--data-dir", "photos", "--out", "runs/photos",
              "--iterations", "3", "--no-progress", "-o", "image_size=16", "-o", "cache=false")
    on_page(cli_error(capsys, *common))  # the warning that it splits classes, then the error
    assert not (here / "runs" / "photos").exists()


def test_code_named_by_an_artifact(here, capsys, monkeypatch):
    from torch import nn

    from metaopt_tuner import Artifact, build_learner, get_suite

    suite = get_suite("sinusoid", shots=10)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    learner = build_learner("metasgd", suite, model=model)
    Artifact.from_learner(learner, suite, model_spec={"factory": "mymodels:SineNet", "kwargs": {}}).save(
        "sine-artifact")
    on_page(cli_error(capsys, "evaluate", "sine-artifact", "--tasks", "5"))
    monkeypatch.setitem(sys.modules, "mymodels", None)
    err = cli_error(capsys, "evaluate", "sine-artifact", "--tasks", "5", "--trust-factory")
    assert err.startswith("error: cannot import model factory mymodels:SineNet: ")
    on_page("error: cannot import model factory mymodels:SineNet: No module named 'mymodels'")

    art = Artifact.from_learner(build_learner("metasgd", suite), suite)
    art.manifest["suite"]["name"] = "mysuite:QuadraticSuite"
    art.save("quadratic-artifact")
    on_page(cli_error(capsys, "evaluate", "quadratic-artifact", "--tasks", "5"))

    art.manifest["suite"] = {"name": "intents", "options": {"encoder": "myembed:encode"}}
    with pytest.raises(Exception) as raised:
        art.build_suite()
    on_page(f"{type(raised.value).__name__}: {raised.value}")


def test_model_mismatch_and_support_labels(here):
    from torch import nn

    import metaopt_tuner
    from metaopt_tuner import Artifact, build_learner

    with pytest.raises(metaopt_tuner.ModelMismatchError) as raised:
        metaopt_tuner.prepare(nn.Linear(1, 1), metaopt_tuner.pretrained("sinusoid"))
    on_page(f"ModelMismatchError: {raised.value}")

    suite = TinyImageSuite()
    art = Artifact.from_learner(build_learner("metasgd", suite), suite, model_spec=suite.model_spec())
    x = torch.rand(6, 1, 8, 8)
    for labels in ([1, 1, 2, 2, 3, 3], [0.0, 0, 1, 1, 2, 2]):
        with pytest.raises(metaopt_tuner.MetaOptError) as raised:
            metaopt_tuner.prepare(None, art, support=(x, torch.tensor(labels)))
        on_page(f"{type(raised.value).__name__}: {raised.value}")


def test_encoder_mismatch(here):
    from metaopt_tuner.artifact.encoder import encoder_option
    from metaopt_tuner.errors import EncoderMismatchError
    from metaopt_tuner.models.text import EncoderIdentity
    from metaopt_tuner.models.text.encoder_states import encoder_checksum

    folder = here / "encoders" / "minilm"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_text("a")
    identity = EncoderIdentity("minilm", encoder_checksum("encoders/minilm"))
    with pytest.raises(EncoderMismatchError) as raised:
        encoder_option("/their/minilm", None, identity, trusted=False)  # none given
    message = str(raised.value)
    on_page(f"error: {message[:message.index('(checksum')]}")
    on_page(message[message.index("), which"):])
    (folder / "model.safetensors").write_text("b")
    with pytest.raises(EncoderMismatchError) as raised:
        identity.check("encoders/minilm")
    message = str(raised.value)
    on_page(f"error: {message[:message.index('(checksum')]}")
    on_page(message[message.index("); point"):])
    with pytest.raises(EncoderMismatchError) as raised:
        identity.check("encoders/other")
    on_page(f"error: {raised.value}")
