"""Few-shot intent classification from CLINC150-format JSON or any ``text,label`` CSV.

``data_dir`` is a folder holding ``data_full.json`` (CLINC150: lists of ``[utterance, intent]``
under ``train``/``val``/``test``, out-of-scope ones under ``oos_*``; an optional ``domains.json``
maps each domain to its intents) or one ``.csv`` file, or the path of such a file. Utterances of
every original split are pooled; the suite's own train/val/test splits are made *by class* (by
domain when domains are known), so no test intent is ever seen in meta-training.

Texts are hashed into n-gram bucket ids once per dataset
(:mod:`metaopt_tuner.models.text.featurizers`) and cached in memory; a task is N classes drawn
from the split, K support and Q query utterances each, as padded ``[N * K, L]`` id tensors that
stack into a :class:`TaskBatch`. With ``encoder`` (a local sentence-transformers folder or
``"module:function"``, see :mod:`metaopt_tuner.models.text.encoders`) every utterance is embedded
once instead, tasks hold ``[N * K, D]`` embeddings and the model is a
:class:`~metaopt_tuner.models.FeatureClassifier` (``hidden`` its MLP, ``logit_scale`` its scale).
With an encoder folder and ``adapt_layers=N``, the encoder's top N layers are adapted per task
(:class:`~metaopt_tuner.models.text.transformer.EncoderTop`): tasks hold the token states below
them, ``[N * K, L, H + 1]`` (see :mod:`metaopt_tuner.models.text.encoder_states`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, DataError
from ..models.text.encoder_states import PackedStates
from ..models.text.encoders import is_encoder_folder
from ..models.text.featurizers import PAD_ID, HashedNgrams
from .base import EVAL_SPLITS, SPLITS, ClassificationSuite, TaskBatch, TaskDraw, fixed_generator
from .recipe import Recipe

__all__ = ["IntentSuite", "IntentData", "TextEpisode", "load_intent_data", "RECIPE",
           "ENCODER_RECIPE", "ENCODER_TOP_RECIPE"]

#: README, intents: Meta-SGD at inner lr 0.5, meta-batch 16, 500 iterations (CLINC150, 5-way,
#: held-out domains: 72.9 1-shot, 91.9 5-shot)
RECIPE = Recipe(
    config={"learner": "metasgd", "inner_lr": 0.5, "meta_batch": 16, "iterations": 500},
    source="README: intents, Meta-SGD, inner lr 0.5, meta-batch 16, 500 iterations",
)

#: benchmarks/any_shape.py: with an encoder folder, its sentence embeddings are frozen (computed
#: once and cached) and the head alone is adapted from prototypes, ten steps with their own
#: per-feature rates, on episodes of every width and 1 to 50 examples per class, so the steps fit a
#: head where the examples allow it; every step's query loss is scored (anytime, at five times the
#: weight of the last: at the sinusoid's weight the loss rose at some steps) and the feature scale
#: (the logits' temperature) is meta-learned from 4, where the support loss is not saturated;
#: each class row's step is bounded (a learned length per step, from 1): rates alone that suit 45
#: classes overshoot at 5 (benchmarks/head_step_variants.py --trust 1)
ENCODER_RECIPE = Recipe(
    config={"learner": "metasgd", "inner_params": "head", "head_init": "prototypes",
            "first_order": False, "lr_granularity": "element", "per_step_lrs": True,
            "inner_steps": 10, "inner_lr": 1.0, "meta_lr": 1e-2, "meta_batch": 4,
            "step_loss_weight": 5.0, "head_step_bound": 1.0, "iterations": 1500},
    suite_options={"adapt_layers": 0, "train_ways": [2, None], "train_shots": [1, 50],
                   "logit_scale": 4.0},
    source="benchmarks/any_shape.py: frozen embeddings, the head alone adapted from "
           "prototypes in 10 steps, episodes of every width and 1-50 shots, 1500 iterations",
)

#: benchmarks/intents_encoder.py: with ``adapt_layers >= 1`` the encoder's top layer is
#: meta-learned as a metric (the head alone adapted, from prototypes) at a tenth of the library's
#: outer rate: the library's 1e-3 wrecks the pretrained layer (45-way 1-shot -17.6 points under
#: centroid)
ENCODER_TOP_RECIPE = Recipe(
    config={"learner": "metasgd", "inner_params": "head", "head_init": "prototypes",
            "first_order": True, "lr_granularity": "element", "inner_lr": 0.01,
            "meta_lr": 1e-4, "meta_lr_schedule": "cosine", "meta_batch": 1, "iterations": 600},
    suite_options={"adapt_layers": 1},
    source="benchmarks/intents_encoder.py: the top layer and the head's rates meta-learned, "
           "the head alone adapted, meta-lr 1e-4, 600 iterations",
)

_CLINC_FILE = "data_full.json"
_DOMAINS_FILE = "domains.json"
_OOS = "oos"
#: label columns tried, in order, when the configured one is the default and absent
_LABEL_FALLBACKS = ("label", "category", "intent")


@dataclass(frozen=True)
class TextEpisode:
    """One episode as text: support and query utterances with their labels (0 .. ways - 1)."""

    support_texts: list[str]
    support_labels: list[int]
    query_texts: list[str]
    query_labels: list[int]


@dataclass(frozen=True)
class IntentData:
    """Every labelled utterance of a dataset and, when known, the domain of each label."""

    source: Path
    texts: list[str]
    labels: list[str]
    domains: dict[str, list[str]] | None


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte {exc.start}: "
            f"{raw[exc.start:exc.start + 1]!r}); save the file as UTF-8"
        ) from None


def _read_csv(path: Path, text_column: str, label_column: str) -> IntentData:
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""))
    try:
        return _read_rows(path, reader, text_column, label_column)
    except csv.Error as exc:  # e.g. a field over the csv module's 131,072-character limit
        raise DataError(f"{path}: near line {reader.line_num + 1}, not readable as CSV: "
                        f"{exc}") from None


def _read_rows(path: Path, reader: csv.DictReader, text_column: str,
               label_column: str) -> IntentData:
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise DataError(f"{path}: line 1 has no header; expected columns {text_column!r} and "
                        f"{label_column!r}")
    reader.fieldnames = header
    if label_column not in header and label_column == "label":
        label_column = next((c for c in _LABEL_FALLBACKS if c in header), label_column)
    missing = [c for c in (text_column, label_column) if c not in header]
    if missing:
        raise DataError(
            f"{path}: the header (line 1) has no column {', '.join(map(repr, missing))}; found "
            f"{', '.join(map(repr, header))} (set text_column / label_column)"
        )
    texts, labels = [], []
    for row in reader:
        line = reader.line_num
        text, label = (row.get(text_column) or "").strip(), (row.get(label_column) or "").strip()
        if not text:
            raise DataError(f"{path}: line {line} (row {len(texts) + 1}) has an empty text")
        if not label:
            raise DataError(f"{path}: line {line} (row {len(texts) + 1}) has an empty label")
        texts.append(text)
        labels.append(label)
    if not texts:
        raise DataError(f"{path}: no rows after the header")
    return IntentData(path, texts, labels, None)


def _read_clinc(path: Path, include_oos: bool) -> IntentData:
    try:
        data = json.loads(_decode(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object with train/val/test lists")
    keys = [k for k in data if k in SPLITS or (include_oos and k.startswith("oos_"))]
    if not any(k in SPLITS for k in keys):
        raise DataError(f"{path}: no train/val/test lists (found keys {sorted(data)})")
    texts, labels = [], []
    for key in keys:
        rows = data[key]
        if not isinstance(rows, list):
            raise DataError(f"{path}: {key!r} is not a list of [utterance, intent] pairs")
        for i, item in enumerate(rows):
            if (not isinstance(item, list) or len(item) != 2
                    or not all(isinstance(v, str) for v in item)):
                raise DataError(f"{path}: {key}[{i}] is not an [utterance, intent] pair of strings")
            text, label = item[0].strip(), item[1].strip()
            if not text:
                raise DataError(f"{path}: {key}[{i}] has an empty utterance")
            if not label:
                raise DataError(f"{path}: {key}[{i}] has an empty intent")
            if label == _OOS and not include_oos:
                continue
            texts.append(text)
            labels.append(label)
    domains = None
    dom_path = path.with_name(_DOMAINS_FILE)
    if dom_path.is_file():
        try:
            domains = json.loads(_decode(dom_path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{dom_path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(domains, dict) or not all(
            isinstance(v, list) and all(isinstance(i, str) for i in v) for v in domains.values()
        ):
            raise DataError(f"{dom_path}: expected an object mapping each domain to a list of intents")
        known = {i for v in domains.values() for i in v}
        stray = sorted(set(labels) - known - {_OOS})
        if stray:
            raise DataError(f"{dom_path}: intent(s) {', '.join(stray[:5])} of {path.name} belong to "
                            "no domain")
    return IntentData(path, texts, labels, domains)


def _resolve(data_dir: str | Path) -> Path:
    path = Path(data_dir).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"data folder {path} does not exist")
    if (path / _CLINC_FILE).is_file():
        return path / _CLINC_FILE
    csvs = sorted(path.glob("*.csv"))
    if len(csvs) == 1:
        return csvs[0]
    if csvs:
        raise DataError(f"{path} holds several CSV files ({', '.join(p.name for p in csvs)}); "
                        "pass the path of one as data_dir")
    raise DataError(f"{path} holds neither {_CLINC_FILE} nor a .csv file")


def load_intent_data(
    data_dir: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    include_oos: bool = False,
) -> IntentData:
    """Read a CLINC150-format folder/JSON file or a CSV file; errors name the file and row."""
    path = _resolve(data_dir)
    if path.suffix.lower() == ".json":
        return _read_clinc(path, include_oos)
    data = _read_csv(path, text_column, label_column)
    if not include_oos:
        keep = [i for i, label in enumerate(data.labels) if label != _OOS]
        data = IntentData(path, [data.texts[i] for i in keep], [data.labels[i] for i in keep], None)
    return data


# Tokenizing a dataset is the slow part of building a suite; every suite built on the same file
# (trainer, evaluation, baselines) shares it while the file is unchanged.
_CACHE: dict[tuple[Any, ...], tuple[IntentData, Tensor | PackedStates]] = {}


def _load_encoded(
    data_dir: str | Path, text_column: str, label_column: str, include_oos: bool,
    featurizer: HashedNgrams, encoder: str | None = None, adapt_layers: int = 0,
) -> tuple[IntentData, Tensor | PackedStates]:
    """The data and its features: hashed n-gram ids ``[M, L]``, or with ``encoder`` the sentence
    embeddings ``[M, D]`` (also cached on disk, see :mod:`metaopt_tuner.models.text.encoders`)."""
    path = _resolve(data_dir).resolve()
    stat = path.stat()
    dom = path.with_name(_DOMAINS_FILE)
    dom_stamp = dom.stat().st_mtime_ns if dom.is_file() else None
    key = (str(path), stat.st_size, stat.st_mtime_ns, dom_stamp, text_column, label_column,
           include_oos, encoder if encoder is not None else featurizer, adapt_layers)
    if key not in _CACHE:
        data = load_intent_data(path, text_column, label_column, include_oos)
        if encoder is None:
            _CACHE[key] = (data, featurizer.encode(data.texts))
        elif adapt_layers:
            from ..models.text.encoder_states import encoder_config, states_cached

            cut = encoder_config(encoder)["num_hidden_layers"] - adapt_layers
            _CACHE[key] = (data, states_cached(encoder, data.texts, cut))
        else:
            from ..models.text.encoders import encode_cached
            from .image_cache import default_cache_dir

            _CACHE[key] = (data, encode_cached(encoder, data.texts, default_cache_dir(path)))
    return _CACHE[key]


def _names(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _split_groups(
    groups: list[str], given: dict[str, list[str] | None], fractions: dict[str, float],
    seed: int, what: str,
) -> dict[str, list[str]]:
    """Assign ``groups`` (domains or classes) to splits: given ones fixed, the rest seeded."""
    out: dict[str, list[str]] = {}
    taken: dict[str, str] = {}
    for split in SPLITS:
        names = given.get(split)
        if names is None:
            continue
        unknown = sorted(set(names) - set(groups))
        if unknown:
            raise ConfigError(f"{split} {what}(s) {', '.join(unknown)} not in the data; "
                              f"available: {', '.join(groups)}")
        for name in names:
            if name in taken and taken[name] != split:
                raise ConfigError(f"{what} {name!r} is in both the {taken[name]} and {split} splits")
            taken[name] = split
        out[split] = list(dict.fromkeys(names))
    rest = [g for g in groups if g not in taken]
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed)).tolist()
    rest = [rest[i] for i in order]
    for split in ("test", "val"):
        if split not in out:
            k = min(len(rest), max(1, round(fractions[split] * len(groups)))) if fractions[split] > 0 else 0
            out[split], rest = rest[:k], rest[k:]
    if "train" not in out:
        out["train"] = rest
    return out


class IntentSuite(ClassificationSuite):
    """N-way K-shot intent classification; classes of the three splits never overlap.

    Splits are by domain when the data knows domains (``domains.json``) and ``split_by`` is not
    ``"class"``: name them with ``train_domains`` / ``val_domains`` / ``test_domains`` (lists or
    comma-separated), or leave them to a seeded split with ``val_fraction`` / ``test_fraction`` of
    the domains. Without domains the same holds for classes (``train_classes``, ...). Out-of-scope
    utterances (label ``oos``) are dropped unless ``include_oos``, which makes them one more class.

    Args:
        data_dir: a folder with CLINC150's ``data_full.json``, or a CSV file of texts and labels
            (``--data-dir``).
        ways: classes per episode (at least 2).
        shots: support examples per class.
        query: query examples per class, which score the adapted model.
        text_column: the CSV column holding the texts.
        label_column: the CSV column holding the labels.
        val_classes: the validation split's classes, named (as ``train_classes``).
        test_classes: the test split's classes, named (as ``train_classes``).
        split_seed: the seed of the fractions' split.
        buckets: the number of hash buckets n-grams are hashed into (the n-gram model's vocabulary).
        word_ngrams: the range of word n-gram lengths hashed, ``[lo, hi]`` (``[0, 0]``: none).
        char_ngrams: the range of in-word character n-gram lengths hashed (``[0, 0]``: none).
        max_tokens: n-gram ids kept per text (its first ones; word n-grams come first).
        embed_dim: the width of the n-gram model's embedding branch (0: the wide gated
            bag-of-n-grams alone).
        hidden: hidden layer widths after the embedding (or after an encoder's embeddings).
        wide: keep the n-gram model's gated wide bag-of-n-grams branch.
        logit_scale: the factor the logits are multiplied by (their initial temperature).
        gate_init: ``idf`` starts the n-gram gates at the training split's IDF, ``ones`` at 1.
        encoder: a local sentence-encoder folder (or ``module:function``) whose embeddings replace
            the hashed n-grams; ``hashed`` or none: the n-grams.
        adapt_layers: the encoder's top transformer layers meta-learned (needs an encoder folder;
            its recipe sets 1).
        train_ways: a ``[lo, hi]`` range of classes per training episode (``hi`` null: as many
            as the training split allows); evaluation keeps ``ways``.
        train_shots: a ``[lo, hi]`` range of support examples per class in training episodes.
    """

    name = "intents"
    recipe = RECIPE
    model_options = ("buckets", "word_ngrams", "char_ngrams", "max_tokens", "embed_dim", "hidden",
                     "wide", "logit_scale", "adapt_layers")
    split_options = MappingProxyType({
        **{f"{s}_{kind}": None for kind in ("domains", "classes") for s in SPLITS},
        "val_fraction": 0.0, "test_fraction": 0.0})

    def __init__(
        self,
        data_dir: str | None = None,
        ways: int = 5,
        shots: int = 1,
        query: int = 15,
        text_column: str = "text",
        label_column: str = "label",
        include_oos: bool = False,
        split_by: str = "auto",
        train_domains: str | list[str] | None = None,
        val_domains: str | list[str] | None = None,
        test_domains: str | list[str] | None = None,
        train_classes: str | list[str] | None = None,
        val_classes: str | list[str] | None = None,
        test_classes: str | list[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.3,
        split_seed: int = 0,
        buckets: int = 1 << 14,
        word_ngrams: tuple[int, int] | list[int] = (1, 2),
        char_ngrams: tuple[int, int] | list[int] = (2, 4),
        max_tokens: int = 256,
        embed_dim: int = 0,
        hidden: int | tuple[int, ...] | list[int] = (),
        wide: bool = True,
        logit_scale: float = 10.0,
        gate_init: str = "idf",
        encoder: str | None = None,
        adapt_layers: int = 0,
        train_ways: Sequence[int | None] | str | None = None,
        train_shots: Sequence[int | None] | str | None = None,
    ) -> None:
        if data_dir is None:
            raise DataError("the intents suite needs data: pass --data-dir (a folder with "
                            "data_full.json, or a text,label CSV file)")
        for label, value in (("ways", ways), ("shots", shots), ("query", query)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{label} must be a positive integer, got {value!r}")
        if ways < 2:
            raise ConfigError(f"ways must be at least 2, got {ways}")
        if split_by not in ("auto", "domain", "class"):
            raise ConfigError(f"split_by must be 'auto', 'domain' or 'class', got {split_by!r}")
        for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not (math.isfinite(float(value)) and 0 <= float(value) < 1):
                raise ConfigError(f"{label} must be in [0, 1), got {value}")
        self.data_dir = str(data_dir)
        self.ways, self.shots, self.query = ways, shots, query
        self.set_train_shapes(train_ways, train_shots)
        self.text_column, self.label_column = text_column, label_column
        self.include_oos, self.split_by = bool(include_oos), split_by
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.split_seed = int(split_seed)
        hidden = [hidden] if isinstance(hidden, int) else hidden  # ``-o hidden=64`` from the CLI
        self.embed_dim, self.hidden = int(embed_dim), [int(h) for h in hidden]
        self.wide, self.logit_scale = bool(wide), float(logit_scale)
        if gate_init not in ("idf", "ones"):
            raise ConfigError(f"gate_init must be 'idf' or 'ones', got {gate_init!r}")
        self.gate_init = gate_init
        self.featurizer = HashedNgrams(
            buckets=buckets, word_ngrams=tuple(word_ngrams), char_ngrams=tuple(char_ngrams),
            max_tokens=max_tokens,
        )
        if isinstance(encoder, str) and not encoder.strip():
            raise ConfigError("encoder is empty: leave it out (or say encoder=hashed) for the "
                              "hashed n-gram features, or name a local model folder")
        self.encoder = None if encoder in (None, "hashed") else str(encoder)
        self.adapt_layers = int(adapt_layers)
        if self.adapt_layers:
            if self.adapt_layers < 0:
                raise ConfigError(f"adapt_layers must be >= 0, got {adapt_layers}")
            if not is_encoder_folder(self.encoder):
                raise ConfigError("adapt_layers needs encoder=FOLDER (a local encoder folder "
                                  f"whose top layers are adapted), got encoder={self.encoder!r}")
            self.encoder = str(Path(self.encoder).expanduser().resolve())
            self._check_adapt_layers()
        self.data, self.token_ids = _load_encoded(
            self.data_dir, text_column, label_column, self.include_oos, self.featurizer,
            self.encoder, self.adapt_layers,
        )
        self._given = {
            "domains": {"train": _names(train_domains), "val": _names(val_domains),
                        "test": _names(test_domains)},
            "classes": {"train": _names(train_classes), "val": _names(val_classes),
                        "test": _names(test_classes)},
        }
        self.split_classes = self._make_splits()
        self._index = self._build_index()
        self._token_lengths: Tensor | None = None

    @classmethod
    def recipe_for_options(cls, options: Mapping[str, Any]) -> Recipe:
        """With ``encoder`` naming a local folder, :data:`ENCODER_RECIPE` (frozen embeddings,
        the head adapted), or :data:`ENCODER_TOP_RECIPE` when ``adapt_layers`` asks for its top
        layers to be meta-learned; else the n-gram :data:`RECIPE`."""
        encoder = options.get("encoder")
        if encoder == "hashed" or not is_encoder_folder(encoder):
            return RECIPE
        return ENCODER_TOP_RECIPE if int(options.get("adapt_layers") or 0) > 0 else ENCODER_RECIPE

    def _check_adapt_layers(self) -> None:
        from ..models.text.encoder_states import encoder_config

        total = encoder_config(self.encoder)["num_hidden_layers"]
        if self.adapt_layers > total:
            raise ConfigError(f"adapt_layers={self.adapt_layers} but the encoder in "
                              f"{self.encoder} has {total} layers")

    # ------------------------------------------------------------------ splits
    @property
    def by_domain(self) -> bool:
        if self.split_by == "domain" and self.data.domains is None:
            raise DataError(f"split_by='domain' but {self.data.source.parent} has no {_DOMAINS_FILE}")
        return self.data.domains is not None and self.split_by != "class"

    def _make_splits(self) -> dict[str, list[str]]:
        labels = sorted(set(self.data.labels))
        fractions = {"val": self.val_fraction, "test": self.test_fraction}
        if self.by_domain:
            assert self.data.domains is not None
            domains = self._split_domains = _split_groups(
                list(self.data.domains), self._given["domains"], fractions, self.split_seed, "domain"
            )
            present = set(labels)
            split = {s: [c for d in domains[s] for c in self.data.domains[d] if c in present]
                     for s in SPLITS}
            if self.include_oos and _OOS in present:
                split["train"].append(_OOS)
        else:
            self._split_domains = None
            split = _split_groups(labels, self._given["classes"], fractions, self.split_seed, "class")
        return split

    def _build_index(self) -> dict[str, tuple[Tensor, Tensor]]:
        members: dict[str, list[int]] = {}
        for i, label in enumerate(self.data.labels):
            members.setdefault(label, []).append(i)
        need = self.shots + self.query
        index = {}
        # "all": every class, to evaluate on data the artifact was not trained on
        for split, classes in {**self.split_classes, "all": sorted(set(self.data.labels))}.items():
            for c in classes:
                if len(members[c]) < need:
                    raise DataError(
                        f"{self.data.source}: label {c!r} has {len(members[c])} examples, fewer "
                        f"than shots + query = {need}; lower shots/query or add examples"
                    )
            width = max([len(members[c]) for c in classes] + [1])
            table = torch.full((len(classes), width), -1, dtype=torch.long)
            for j, c in enumerate(classes):
                table[j, : len(members[c])] = torch.tensor(members[c])
            counts = torch.tensor([len(members[c]) for c in classes], dtype=torch.long)
            index[split] = (table, counts)
        return index

    def split_domains(self) -> dict[str, list[str]] | None:
        """The domains of each split (``None`` when the split is by class)."""
        return None if self._split_domains is None else {k: list(v) for k, v in self._split_domains.items()}

    def examples(self, split: str) -> tuple[Tensor, list[str]]:
        """Token ids ``[M, L]`` and labels of every utterance of ``split``'s classes."""
        self._check_split(split)
        keep = set(self.split_classes[split])
        rows = [i for i, label in enumerate(self.data.labels) if label in keep]
        return self.token_ids[rows], [self.data.labels[i] for i in rows]

    def split_summary(self, split: str) -> dict[str, int]:
        """Classes and utterances of ``split``."""
        self._check_split(split)
        counts = self._index[split][1]
        return {"num_classes": len(counts), "num_examples": int(counts.sum())}

    def _check_split(self, split: str) -> None:
        if split not in EVAL_SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(EVAL_SPLITS)}")
        if split != "all" and not self.split_classes[split]:
            raise ConfigError(f"the {split} split has no classes (see val_fraction / test_fraction)")
        # each split is checked where it is used: evaluating the test split at a width the
        # validation split cannot hold is fine (the trainer draws its validation tasks, and so
        # checks that split, before its first iteration)
        classes = len(self.split_classes[split]) if split != "all" else len(set(self.data.labels))
        if classes < self.ways:
            fix = ("give it more or none (val_fraction=0)" if split == "val"
                   else "change the split options or lower ways")
            raise ConfigError(f"the {split} split has {classes} classes, fewer than "
                              f"ways={self.ways}; {fix}")

    # ------------------------------------------------------------------ tasks
    def sample(
        self, num_tasks: int, generator: torch.Generator, split: str = "train"
    ) -> TaskBatch:
        return self.draw_tasks(num_tasks, generator, split).tasks()

    def draw_tasks(
        self, num_tasks: int, generator: torch.Generator, split: str = "train"
    ) -> TaskDraw:
        """The episodes' dataset rows, drawn now; their features gathered a range at a time."""
        self._check_split(split)
        if num_tasks < 1:
            raise ConfigError(f"num_tasks must be positive, got {num_tasks}")
        with self.episode_shape(generator, split) as (n, k):
            rows = self._rows(num_tasks, generator, split)  # [T, n, k + q] dataset rows
        q = self.query
        # one padding width over every task, so a range built alone equals its slice of all
        width = int(self._lengths()[rows].max().clamp(min=1))

        def build(start: int, stop: int) -> TaskBatch:
            part, t = rows[start:stop], stop - start
            y_s = torch.arange(n).repeat_interleave(k).expand(t, -1).clone()
            y_q = torch.arange(n).repeat_interleave(q).expand(t, -1).clone()
            if isinstance(self.token_ids, PackedStates):  # token states: [t, n, k + q, L, H + 1]
                x = self.token_ids.gather(part, width=width)
                shape = x.shape[-2:]
                return TaskBatch(x[:, :, :k].reshape(t, n * k, *shape), y_s,
                                 x[:, :, k:].reshape(t, n * q, *shape), y_q)
            if self.encoder is not None:  # sentence embeddings: [t, n, k + q, D]
                emb = self.token_ids[part]
                dim = emb.shape[-1]
                return TaskBatch(emb[:, :, :k].reshape(t, n * k, dim), y_s,
                                 emb[:, :, k:].reshape(t, n * q, dim), y_q)
            # Padding is trimmed to the longest text of all the tasks drawn; support and query
            # share one width so callers may concatenate them.
            ids = self.token_ids[part][..., :width]
            return TaskBatch(ids[:, :, :k].reshape(t, n * k, width).contiguous(), y_s,
                             ids[:, :, k:].reshape(t, n * q, width).contiguous(), y_q)

        return TaskDraw(num_tasks, build)

    def _lengths(self) -> Tensor:
        """Tokens of every utterance ``[M]`` (n-gram ids that are not padding, or token states)."""
        if self._token_lengths is None:
            if isinstance(self.token_ids, PackedStates):
                self._token_lengths = self.token_ids.offsets.diff()
            elif self.encoder is not None:  # one embedding per utterance
                self._token_lengths = torch.ones(self.token_ids.shape[0], dtype=torch.long)
            else:
                self._token_lengths = (self.token_ids != PAD_ID).sum(-1)
        return self._token_lengths

    def shape_limits(self, split: str) -> tuple[int, int]:
        """The classes of ``split`` and the most shots that leave ``query`` utterances in each."""
        counts = self._index[split][1]
        return len(counts), int(counts.min()) - self.query

    def _rows(self, num_tasks: int, generator: torch.Generator, split: str) -> Tensor:
        """The dataset rows of ``num_tasks`` episodes, ``[T, ways, shots + query]``: per class its
        support rows, then its query rows."""
        table, counts = self._index[split]
        n, k, q = self.ways, self.shots, self.query
        classes = torch.rand(num_tasks, len(counts), generator=generator).argsort(1)[:, :n]
        u = torch.rand(num_tasks, n, table.shape[1], generator=generator)
        u = u.masked_fill(torch.arange(table.shape[1]) >= counts[classes].unsqueeze(-1), 2.0)
        picks = u.argsort(-1)[..., : k + q]  # [T, n, k + q] positions within each class
        return table[classes].gather(2, picks)

    def fixed_episode_texts(self, num_tasks: int, split: str = "test",
                            seed: int = 0) -> list[TextEpisode]:
        """The utterances of :meth:`fixed_tasks`' episodes (same arguments, same episodes, the
        same label numbers), for methods that read text rather than features (SetFit)."""
        self._check_split(split)
        rows = self._rows(num_tasks, fixed_generator(split, seed), split)
        k, texts = self.shots, self.data.texts

        def part(block: Tensor) -> tuple[list[str], list[int]]:
            return ([texts[int(r)] for c in range(block.shape[0]) for r in block[c]],
                    [c for c in range(block.shape[0]) for _ in range(block.shape[1])])

        return [TextEpisode(*part(r[:, :k]), *part(r[:, k:])) for r in rows]

    # ------------------------------------------------------------------ model, loss, metric
    def train_idf(self) -> Tensor:
        """Inverse document frequency of every bucket over the train split's utterances.

        ``log((1 + M) / (1 + df)) + 1`` as in scikit-learn's smooth IDF; buckets never seen in
        training get the largest weight, as a rare n-gram would.
        """
        ids, _ = self.examples("train")
        present = torch.zeros(ids.shape[0], self.featurizer.buckets + 1)
        present.scatter_(1, ids, 1.0)
        df = present[:, 1:].sum(0)
        idf = torch.ones(self.featurizer.buckets + 1)
        idf[1:] = torch.log((1.0 + ids.shape[0]) / (1.0 + df)) + 1.0
        return idf

    def build_model(self) -> nn.Module:
        """The reference model; with ``gate_init="idf"`` its n-gram gates start at the train
        split's IDF, so one inner step from theta is already TF-IDF nearest-class-mean."""
        model = super().build_model()
        if self.adapt_layers:
            from ..models.text.encoder_states import top_layer_weights

            with torch.no_grad():
                for name, value in top_layer_weights(self.encoder, self.adapt_layers).items():
                    model.get_parameter(name).copy_(value)
        if self.gate_init == "idf" and isinstance(getattr(model, "gate", None), nn.Parameter):
            with torch.no_grad():
                model.gate.copy_(self.train_idf())
        return model

    def model_spec(self) -> dict[str, Any]:
        # an encoder folder's identity travels with the model, never its path (models.text.identity)
        if self.adapt_layers:
            from ..models.text.encoder_states import encoder_config

            cfg = encoder_config(self.encoder)
            kwargs = {k: cfg[k] for k in ("hidden_size", "num_attention_heads",
                                          "intermediate_size", "layer_norm_eps")}
            return {"name": "encoder_top", "kwargs": {
                **kwargs, "layers": self.adapt_layers, "num_classes": self.ways,
                "scale": self.logit_scale, **self._encoder_identity()}}
        if self.encoder is not None:
            kwargs = {"in_features": int(self.token_ids.shape[1]), "num_classes": self.ways,
                      "hidden": list(self.hidden), "scale": self.logit_scale}
            if is_encoder_folder(self.encoder):
                kwargs.update(self._encoder_identity())
            return {"name": "features", "kwargs": kwargs}
        return {
            "name": "text_bag",
            "kwargs": {
                "buckets": self.featurizer.buckets,
                "num_classes": self.ways,
                "embed_dim": self.embed_dim,
                "hidden": list(self.hidden),
                "wide": self.wide,
                "logit_scale": self.logit_scale,
            },
        }

    def _encoder_identity(self) -> dict[str, str]:
        from ..models.text.identity import EncoderIdentity

        identity = EncoderIdentity.of_folder(str(self.encoder))
        return {"encoder_name": identity.name, "checksum": identity.checksum}

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "data_dir": self.data_dir,
            "ways": self.ways,
            "shots": self.shots,
            "query": self.query,
            "text_column": self.text_column,
            "label_column": self.label_column,
            "include_oos": self.include_oos,
            "split_by": self.split_by,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
            "buckets": self.featurizer.buckets,
            "word_ngrams": list(self.featurizer.word_ngrams),
            "char_ngrams": list(self.featurizer.char_ngrams),
            "max_tokens": self.featurizer.max_tokens,
            "embed_dim": self.embed_dim,
            "hidden": list(self.hidden),
            "wide": self.wide,
            "logit_scale": self.logit_scale,
            "gate_init": self.gate_init,
            "encoder": self.encoder,
            "adapt_layers": self.adapt_layers,
            **self.shape_range_options(),
        }
        for kind, given in self._given.items():
            for split, names in given.items():
                if names is not None:
                    out[f"{split}_{kind}"] = list(names)
        return out
