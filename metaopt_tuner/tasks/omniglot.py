"""Few-shot image classification from a folder in Omniglot layout: N-way K-shot episodes.

The data is any ``<group>/<class>/*.png|jpg`` tree (Omniglot: ``<alphabet>/<character>/*.png``, as
torchvision extracts it), a zip of one, or a folder of such zips (Omniglot's own downloads), read
directly. Splits are made by alphabet (group), so test characters are never seen in training.

The Omniglot suite speaks of alphabets (``test_alphabets``, ``within_alphabet``); the image-folder
suite, for any photos, of groups (``test_groups``, ``within_group``), and takes the alphabet names
as aliases.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from ..errors import ConfigError, DataError, MetaOptWarning, SuiteError
from ..models import check_convnet_options
from .augment import apply_affine, check_jitter, draw_affine
from .base import EVAL_SPLITS, SPLITS, ClassificationSuite, TaskBatch, TaskDraw
from .image_cache import ImageCollection, load_image_collection
from .recipe import Recipe

__all__ = ["OmniglotSuite", "ImageFolderSuite", "GROUP_ALIASES", "RECIPE"]

#: Meta-SGD from a prototype head, adapting the head alone (the body's features are computed once
#: per task; its rates are zero), one step at 0.05, features scaled by 0.3 at initialization (the
#: prototype logits' temperature 0.09), cosine meta-lr, meta-batch 1, 64 filters, group norm
#: (each image normalized alone), jittered training images: the best configuration measured
#: (docs/benchmarks.md, "Measurements behind the defaults" and the held-out-alphabet folds). The
#: prototypes are whitened by the support set's shrunk covariance at strength 6 (picked over 1 to
#: 20 on the validation alphabet at 2, 5 and 15 shots; it does nothing at one shot): the body
#: separates its training classes perfectly, so no step learned on them can learn the held-out
#: classes' spread, which a logistic regression uses at 5 and 15 shots (the Benchmarks page,
#: "Omniglot, the recipe with a whitened prototype head").
RECIPE = Recipe(
    config={"learner": "metasgd", "head_init": "prototypes", "inner_params": "head",
            "inner_lr": 0.05, "inner_steps": 1, "meta_batch": 1, "meta_lr_schedule": "cosine",
            "head_whitening": 6.0, "iterations": 8000},
    suite_options={"filters": 64, "norm": "group", "feature_gain": 0.3, "jitter_degrees": 15.0,
                   "jitter_scale": 0.15, "jitter_shift": 0.15},
    source="benchmarks/omniglot_folds.py and omniglot_small.py: Meta-SGD from a prototype head "
           "adapting the head alone, group norm, feature gain 0.3, cosine, jitter, 64 filters, "
           "meta-batch 1 x 8,000",
)


def _names(value: str | Sequence[str] | None, option: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):  # "-o test_alphabets=Greek,Latin" arrives as one string
        return [v.strip() for v in value.split(",") if v.strip()]
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{option} must be a list of names, got {value!r}")
    return list(value)


def _positive(value: Any, option: str) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ConfigError(f"{option} must be a positive integer, got {value!r}")
    return int(value)


def _fraction(value: Any, option: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{option} must be in [0, 1), got {value}")
    return value


class _SplitIndex:
    """The classes of one split, as tensors ready for vectorized episode sampling."""

    def __init__(self, coll: ImageCollection, class_ids: list[int], rotations: int) -> None:
        self.class_ids = torch.tensor(class_ids, dtype=torch.int64)
        self.rotations = rotations
        groups = sorted({coll.groups[i] for i in class_ids})
        self.group_names = groups
        gid = {g: j for j, g in enumerate(groups)}
        self.group_of = torch.tensor([gid[coll.groups[i]] for i in class_ids], dtype=torch.int64)
        self.group_sizes = torch.bincount(self.group_of, minlength=len(groups))

    @property
    def num_classes(self) -> int:  # rotated copies count as classes
        return self.class_ids.numel() * self.rotations


class OmniglotSuite(ClassificationSuite):
    """N-way K-shot classification episodes drawn from an image folder in Omniglot layout.

    Each episode draws ``ways`` classes (all from one alphabet with ``within_alphabet``, the harder
    original one-shot protocol), ``shots`` support and ``query`` query images per class, labels
    0..N-1 in a random order per episode. Images are ``[channels, image_size, image_size]`` floats
    in [0, 1]. ``rotations`` adds each training character rotated by 90, 180 and 270 degrees as new
    classes (MAML's augmentation); validation and test episodes use the characters as drawn unless
    ``eval_rotations``, which makes their rotated copies classes too (a common but easier protocol:
    a rotated character differs from the others by its orientation alone, so compare figures only
    with results measured the same way).

    Splits: ``train_alphabets``/``val_alphabets``/``test_alphabets`` name them explicitly (the
    training split defaults to every alphabet not named); otherwise ``val_fraction`` and
    ``test_fraction`` of the alphabets are drawn with ``split_seed``. ``split_by="class"`` splits
    characters instead of alphabets (for a tree with a single group); ``"auto"`` (the image-folder
    suite's default) splits whole groups when there are enough and classes otherwise, and says so.
    ``alphabets`` and ``exclude_alphabets`` filter the tree first. Decoded images are cached (see
    ``image_cache``).

    ``jitter_degrees``, ``jitter_scale`` and ``jitter_shift`` (0 by default) jitter every training
    image by a random small rotation, scale and shift (see ``augment``); validation and test
    episodes are never jittered.

    ``filters`` and ``norm`` shape the reference ConvNet (see ``models.ConvNet``). ``norm`` is
    ``"support"`` by default: batch norm with the support set's statistics, frozen for the queries,
    so a query's prediction never depends on the other queries of its batch. ``"group"`` and
    ``"layer"`` normalize each image alone (the recipe uses ``"group"``: it generalized better to
    held-out alphabets, ``benchmarks/omniglot_folds.py``), ``"batch"`` is the transductive batch
    norm of MAML's ConvNet (all measured in ``benchmarks/omniglot_small.py --norm``).
    ``feature_gain`` is the ConvNet's initial feature scale (a prototype head's initial temperature
    is its square).

    Args:
        data_dir: the image tree (``root/<group>/<class>/*.png``), a zip of it or a folder of
            zips (``--data-dir``).
        image_size: the side images are resized to, in pixels.
        channels: 1 (grayscale) or 3 (RGB) [default: the suite's: 1 for omniglot, 3 for
            image-folder].
        invert: invert the pixel values (Omniglot's black strokes on white become bright)
            [default: the suite's].
        cache: keep decoded images on disk (see ``image_cache``).
        cache_dir: where the decoded-image cache goes [default: beside the data when writable].
        train_ways: a ``[lo, hi]`` range of classes per training episode (``hi`` null: as many
            as the training split allows); evaluation keeps ``ways``.
        train_shots: a ``[lo, hi]`` range of support examples per class in training episodes.
        split_by: ``"alphabet"`` (whole groups go to the splits), ``"class"`` (classes do) or
            ``"auto"`` (groups when there are enough to hold some out, else classes, with a
            warning) [default: the suite's: alphabet for omniglot, auto for image-folder].
    """

    name = "omniglot"
    recipe = RECIPE
    model_options = ("image_size", "channels", "filters", "norm", "feature_gain")
    split_options = MappingProxyType({"train_alphabets": None, "val_alphabets": None,
                                      "test_alphabets": None, "val_fraction": 0.0,
                                      "test_fraction": 0.0})

    # defaults that differ between the Omniglot suite and the generic image-folder one
    _channels, _invert, _rotations = 1, True, True
    _split_by = "alphabet"
    #: what the suite calls a group of classes in its option names and messages
    _group = "alphabet"
    #: the data the suite reads, as its missing-folder error names it
    _layout = ("an <alphabet>/<character>/*.png tree or the Omniglot zips "
               "(`metaopt download omniglot --to DIR` fetches them)")

    def _opt(self, name: str) -> str:
        """The option called ``name`` in the Omniglot suite (``test_alphabets``), in this suite's
        words (``test_groups`` for the image-folder suite)."""
        return name.replace("alphabet", self._group)

    def __init__(
        self,
        data_dir: str | None = None,
        ways: int = 5,
        shots: int = 1,
        query: int = 5,
        image_size: int = 28,
        channels: int | None = None,
        invert: bool | None = None,
        rotations: bool | None = None,
        eval_rotations: bool = False,
        within_alphabet: bool = False,
        train_alphabets: Sequence[str] | str | None = None,
        val_alphabets: Sequence[str] | str | None = None,
        test_alphabets: Sequence[str] | str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        split_by: str | None = None,
        alphabets: Sequence[str] | str | None = None,
        exclude_alphabets: Sequence[str] | str | None = None,
        filters: int = 64,
        norm: str = "support",
        feature_gain: float = 1.0,
        cache: bool = True,
        cache_dir: str | None = None,
        jitter_degrees: float = 0.0,
        jitter_scale: float = 0.0,
        jitter_shift: float = 0.0,
        train_ways: Sequence[int | None] | str | None = None,
        train_shots: Sequence[int | None] | str | None = None,
    ) -> None:
        self.data_dir = str(data_dir) if data_dir is not None else None
        self.ways = _positive(ways, "ways")
        self.shots = _positive(shots, "shots")
        self.query = _positive(query, "query")
        self.image_size = _positive(image_size, "image_size")
        self.channels = _positive(self._channels if channels is None else channels, "channels")
        if self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        self.invert = bool(self._invert if invert is None else invert)
        self.rotations = bool(self._rotations if rotations is None else rotations)
        self.eval_rotations = bool(eval_rotations)
        self.within_alphabet = bool(within_alphabet)
        self.train_alphabets = _names(train_alphabets, self._opt("train_alphabets"))
        self.val_alphabets = _names(val_alphabets, self._opt("val_alphabets"))
        self.test_alphabets = _names(test_alphabets, self._opt("test_alphabets"))
        self.val_fraction = _fraction(val_fraction, "val_fraction")
        self.test_fraction = _fraction(test_fraction, "test_fraction")
        self.split_seed = int(split_seed)
        split_by = self._split_by if split_by is None else split_by
        if split_by in ("alphabet", "group"):  # either word, in either suite
            split_by = self._group
        if split_by not in (self._group, "class", "auto"):
            raise ConfigError(f"split_by must be '{self._group}', 'class' or 'auto', got {split_by!r}")
        self.split_by = split_by
        self.alphabets = _names(alphabets, self._opt("alphabets"))
        self.exclude_alphabets = _names(exclude_alphabets, self._opt("exclude_alphabets"))
        self.filters = _positive(filters, "filters")
        check_convnet_options(norm, float(feature_gain))
        self.norm = norm
        self.feature_gain = float(feature_gain)
        self.cache = bool(cache)
        self.cache_dir = str(cache_dir) if cache_dir is not None else None
        self.jitter_degrees, self.jitter_scale, self.jitter_shift = check_jitter(
            jitter_degrees, jitter_scale, jitter_shift)
        self.set_train_shapes(train_ways, train_shots)
        self._coll: ImageCollection | None = None
        self._splits: dict[str, _SplitIndex] | None = None

    # ------------------------------------------------------------------ data
    def load(self) -> OmniglotSuite:
        """Read (or reuse the cached) images and build the splits; raises DataError on bad data.

        Called on first use; call it early to surface data problems before anything else runs.
        """
        if self._splits is not None:
            return self
        if self.data_dir is None:
            raise DataError(
                f"the {self.name} suite needs a data folder: pass --data-dir (data_dir=...) pointing at "
                f"{self._layout}"
            )
        coll = load_image_collection(
            Path(self.data_dir), image_size=self.image_size, channels=self.channels,
            invert=self.invert, cache=self.cache, cache_dir=self.cache_dir,
        )
        keep = self._filtered(coll)
        need = self.shots + self.query
        counts = coll.counts
        short = [i for i in keep if int(counts[i]) < need]
        if short:
            i = short[0]
            raise DataError(
                f"class {coll.groups[i]}/{coll.classes[i]} in {self.data_dir} has {int(counts[i])} "
                f"images but shots + query = {self.shots} + {self.query} = {need} are needed "
                f"({len(short)} of {len(keep)} classes are short); lower shots or query"
            )
        assignment = self._assign(coll, keep)
        self._splits = {
            split: _SplitIndex(coll, ids, 4 if (self.eval_rotations if split != "train"
                                                else self.rotations) else 1)
            for split, ids in {**assignment, "all": keep}.items()
        }
        self._coll = coll
        return self

    def _filtered(self, coll: ImageCollection) -> list[int]:
        present = set(coll.groups)
        for option, names in (("alphabets", self.alphabets), ("exclude_alphabets", self.exclude_alphabets)):
            missing = sorted(set(names or ()) - present)
            if missing:
                raise DataError(
                    f"{self._opt(option)} names {', '.join(missing)}, not in {self.data_dir}; "
                    f"{self._group}s there: {', '.join(sorted(present))}"
                )
        keep = [
            i for i, g in enumerate(coll.groups)
            if (self.alphabets is None or g in self.alphabets)
            and (self.exclude_alphabets is None or g not in self.exclude_alphabets)
        ]
        if not keep:
            raise DataError(f"no classes left in {self.data_dir} after the {self._group} filters "
                            f"({self._opt('alphabets')}, {self._opt('exclude_alphabets')})")
        return keep

    def _enough_groups(self, coll: ImageCollection, keep: list[int]) -> bool:
        """``split_by="auto"``: whole groups go to the splits when there are enough of them to hold
        some out (a ``root/<group>/<class>/`` tree); else (a flat ``root/<class>/`` folder, or too
        few groups) the classes are split, and the user is told."""
        groups = sorted({coll.groups[i] for i in keep})
        named = any(v is not None for v in (self.train_alphabets, self.val_alphabets,
                                             self.test_alphabets))
        held = sum(1 for f in (self.val_fraction, self.test_fraction) if f > 0)
        if named or len(groups) > held:
            return True
        warnings.warn(
            f"{self.data_dir} has {len(groups)} group(s) of classes ({', '.join(groups)}): too few to "
            "hold whole groups out, so its classes are split between training, validation and test "
            f"(-o split_by=class says so; -o split_by={self._group} asks for groups)",
            MetaOptWarning, stacklevel=4)
        return False

    def _assign(self, coll: ImageCollection, keep: list[int]) -> dict[str, list[int]]:
        """Class ids per split; units (alphabets or classes) never straddle two splits."""
        by_alphabet = self.split_by == self._group or (
            self.split_by == "auto" and self._enough_groups(coll, keep))
        unit_of = {i: coll.groups[i] if by_alphabet else f"{coll.groups[i]}/{coll.classes[i]}"
                   for i in keep}
        units = sorted(set(unit_of.values()))
        explicit = {"train": self.train_alphabets, "val": self.val_alphabets, "test": self.test_alphabets}
        chosen: dict[str, set[str]] = {}
        if any(v is not None for v in explicit.values()):
            if not by_alphabet:
                raise ConfigError(f"explicit {self._group} lists need split_by='{self._group}'")
            for split, names in explicit.items():
                missing = sorted(set(names or ()) - set(units))
                if missing:
                    raise DataError(
                        f"{self._opt(split + '_alphabets')} names {', '.join(missing)}, not in "
                        f"{self.data_dir} (after filters); {self._group}s there: {', '.join(units)}"
                    )
            named = [set(v or ()) for v in explicit.values()]
            for (a, sa), (b, sb) in ((("train", named[0]), ("val", named[1])),
                                     (("train", named[0]), ("test", named[2])),
                                     (("val", named[1]), ("test", named[2]))):
                if sa & sb:
                    both = ", ".join(sorted(sa & sb))
                    raise ConfigError(f"{self._group}(s) {both} are in both {a} and {b}")
            chosen = {s: set(v or ()) for s, v in explicit.items()}
            if self.train_alphabets is None:
                chosen["train"] = set(units) - chosen["val"] - chosen["test"]
        else:
            perm = torch.randperm(len(units), generator=torch.Generator().manual_seed(self.split_seed))
            order = [units[int(j)] for j in perm]

            def count(fraction: float) -> int:
                return 0 if fraction == 0 else max(1, round(fraction * len(units)))

            n_test, n_val = count(self.test_fraction), count(self.val_fraction)
            if n_test + n_val >= len(units):
                kind = f"{self._group}s" if by_alphabet else "classes"
                raise DataError(
                    f"{self.data_dir} has {len(units)} {kind}: too few to hold out {n_val} for "
                    f"validation and {n_test} for test and keep some for training; lower "
                    "val_fraction/test_fraction or name the splits explicitly"
                )
            chosen = {"test": set(order[:n_test]), "val": set(order[n_test:n_test + n_val]),
                      "train": set(order[n_test + n_val:])}
        return {s: [i for i in keep if unit_of[i] in chosen[s]] for s in SPLITS}

    def split_alphabets(self) -> dict[str, list[str]]:
        """The alphabets (groups) of every split, after loading."""
        self.load()
        assert self._splits is not None
        return {s: list(self._splits[s].group_names) for s in SPLITS}

    def split_sizes(self) -> dict[str, int]:
        """Number of classes of every split (rotated copies included)."""
        self.load()
        assert self._splits is not None
        return {s: self._splits[s].num_classes for s in SPLITS}

    def split_summary(self, split: str) -> dict[str, int]:
        """Classes (rotated copies included) and images of ``split``."""
        ix = self._index(split)
        assert self._coll is not None
        images = int(self._coll.counts[ix.class_ids].sum()) * ix.rotations
        return {"num_classes": ix.num_classes, "num_examples": images}

    def _index(self, split: str) -> _SplitIndex:
        if split not in EVAL_SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(EVAL_SPLITS)}")
        self.load()
        assert self._splits is not None
        ix = self._splits[split]
        if ix.num_classes == 0:  # the options left it empty (e.g. val_fraction=0)
            raise ConfigError(
                f"the {split} split of {self.data_dir} has no {self._group}s; name them with "
                f"{self._opt(split + '_alphabets')} or set {split}_fraction"
            )
        if self.within_alphabet:
            largest = int(ix.group_sizes.max()) * ix.rotations
            if largest < self.ways:
                raise DataError(
                    f"within-{self._group} {self.ways}-way episodes need one {self._group} with "
                    f"{self.ways} classes; the largest in the {split} split has {largest}"
                )
        elif ix.num_classes < self.ways:
            raise DataError(
                f"the {split} split of {self.data_dir} has {ix.num_classes} classes, fewer than "
                f"ways = {self.ways}"
            )
        return ix

    # ------------------------------------------------------------------ episodes
    def shape_limits(self, split: str) -> tuple[int, int]:
        """The widest episode (within one alphabet when episodes are) and the most shots that
        leave ``query`` images in every class of ``split``."""
        ix = self._index(split)
        coll = self._coll
        assert coll is not None
        widest = (int((ix.group_sizes * ix.rotations).max()) if self.within_alphabet
                  else ix.num_classes)
        return widest, int(coll.counts[ix.class_ids].min()) - self.query

    def sample(self, num_tasks: int, generator: torch.Generator, split: str = "train") -> TaskBatch:
        return self.draw_tasks(num_tasks, generator, split).tasks()

    def draw_tasks(self, num_tasks: int, generator: torch.Generator,
                   split: str = "train") -> TaskDraw:
        """Classes, images and jitter of every episode, drawn now; pixels built a range at a time."""
        if isinstance(num_tasks, bool) or num_tasks < 1:
            raise ConfigError(f"num_tasks must be positive, got {num_tasks}")
        self._index(split)
        with self.episode_shape(generator, split):
            return self._draw(num_tasks, generator, split)

    def _draw(self, num_tasks: int, generator: torch.Generator, split: str) -> TaskDraw:
        ix = self._index(split)
        coll = self._coll
        assert coll is not None
        t, n, k, q, r = num_tasks, self.ways, self.shots, self.query, ix.rotations
        # Classes: random scores, the n smallest per task; their order is the label order.
        scores = torch.rand(t, ix.num_classes, generator=generator)
        if self.within_alphabet:
            eligible = torch.nonzero(ix.group_sizes * r >= n).flatten()
            alphabet = eligible[torch.randint(len(eligible), (t,), generator=generator)]
            group_of = ix.group_of.repeat_interleave(r)  # class c*r + j is class c rotated j times
            scores = scores.masked_fill(group_of.unsqueeze(0) != alphabet.unsqueeze(1), 2.0)
        chosen = scores.argsort(dim=1)[:, :n]  # [T, N]
        base, rot = ix.class_ids[chosen // r], chosen % r
        # Images: k + q distinct ones per class, drawn the same way among the class's images.
        counts = coll.counts[base]
        width = int(counts.max())
        pick_scores = torch.rand(t, n, width, generator=generator)
        pick_scores = pick_scores.masked_fill(torch.arange(width) >= counts.unsqueeze(-1), 2.0)
        pick = pick_scores.argsort(dim=-1)[..., : k + q]  # [T, N, K+Q]
        theta = None  # the training split's jitter, one transform per image (None: identity)
        if split == "train":
            theta = draw_affine(t * n * (k + q), generator, self.jitter_degrees, self.jitter_scale,
                                self.jitter_shift)
        labels = torch.arange(n).view(1, n, 1)

        def build(start: int, stop: int) -> TaskBatch:
            m = stop - start
            images = coll.images[coll.offsets[base[start:stop]].unsqueeze(-1) + pick[start:stop]]
            turns = rot[start:stop]
            for j in range(1, r):  # images: [m, N, K+Q, C, S, S]
                mask = turns == j
                if bool(mask.any()):
                    images[mask] = torch.rot90(images[mask], j, dims=(-2, -1))
            x = images.to(torch.float32).div_(255.0)
            if theta is not None:
                per_task = n * (k + q)
                x = apply_affine(x.flatten(0, 2), theta[start * per_task:stop * per_task]).view_as(x)
            shape = x.shape[3:]
            return TaskBatch(x[:, :, :k].reshape(m, n * k, *shape),
                             labels.expand(m, n, k).reshape(m, n * k),
                             x[:, :, k:].reshape(m, n * q, *shape),
                             labels.expand(m, n, q).reshape(m, n * q))

        return TaskDraw(num_tasks, build)

    # ------------------------------------------------------------------ model, loss, metric
    def model_spec(self) -> dict[str, Any]:
        return {
            "name": "convnet",
            "kwargs": {"in_channels": self.channels, "num_classes": self.ways, "filters": self.filters,
                       "blocks": 4, "image_size": self.image_size, "norm": self.norm,
                       "feature_gain": self.feature_gain},
        }

    def options(self) -> dict[str, Any]:
        return {self._opt(name): value for name, value in self._options().items()}

    def _options(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "ways": self.ways,
            "shots": self.shots,
            "query": self.query,
            "image_size": self.image_size,
            "channels": self.channels,
            "invert": self.invert,
            "rotations": self.rotations,
            "eval_rotations": self.eval_rotations,
            "within_alphabet": self.within_alphabet,
            "train_alphabets": self.train_alphabets,
            "val_alphabets": self.val_alphabets,
            "test_alphabets": self.test_alphabets,
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "split_seed": self.split_seed,
            "split_by": self.split_by,
            "alphabets": self.alphabets,
            "exclude_alphabets": self.exclude_alphabets,
            "filters": self.filters,
            "norm": self.norm,
            "feature_gain": self.feature_gain,
            "cache": self.cache,
            "cache_dir": self.cache_dir,
            "jitter_degrees": self.jitter_degrees,
            "jitter_scale": self.jitter_scale,
            "jitter_shift": self.jitter_shift,
            **self.shape_range_options(),
        }


#: the image-folder suite's options that the Omniglot suite names after alphabets: old name -> name
GROUP_ALIASES = MappingProxyType({
    "within_alphabet": "within_group",
    "train_alphabets": "train_groups",
    "val_alphabets": "val_groups",
    "test_alphabets": "test_groups",
    "alphabets": "groups",
    "exclude_alphabets": "exclude_groups",
})


class ImageFolderSuite(OmniglotSuite):
    """Any ``root/<group>/<class>/*.png|jpg`` tree, or a flat ``root/<class>/*.jpg`` folder: the
    Omniglot suite with RGB, no inversion, no rotation augmentation and ``split_by="auto"`` (whole
    groups held out when there are enough, else classes) by default.

    Its options speak of groups where the Omniglot suite's speak of alphabets; the alphabet names
    (``test_alphabets``, ``within_alphabet``, ...) are accepted as aliases, so artifacts and
    commands from before the rename keep working.

    Args:
        ways: classes per episode (all from one group with ``within_group``), labels 0..N-1 in
            a random order per episode.
        shots: support images per class.
        query: query images per class (what the adapted model is scored on).
        within_group: every episode draws its classes from one group (harder: the classes of a
            group look alike).
        train_groups: the groups of the training split [default: every group not named in
            ``val_groups`` or ``test_groups``]; a list, or names separated by commas.
        val_groups: the groups of the validation split [default: drawn, ``val_fraction`` of them].
        test_groups: the groups of the test split [default: drawn, ``test_fraction`` of them].
        val_fraction: the share of the groups (of the classes, when they are split) drawn for
            validation, unless the splits are named.
        test_fraction: the share drawn for test, the same way.
        split_seed: the seed of that draw.
        split_by: ``"group"`` (whole groups go to the splits), ``"class"`` (classes do) or
            ``"auto"`` (groups when there are enough to hold some out, else classes, with a
            warning) [default: auto].
        groups: keep only these groups of the folder.
        exclude_groups: leave these groups of the folder out.
    """

    name = "image-folder"
    split_options = MappingProxyType({"train_groups": None, "val_groups": None, "test_groups": None,
                                      "val_fraction": 0.0, "test_fraction": 0.0})
    _channels, _invert, _rotations = 3, False, False
    _split_by = "auto"
    _group = "group"
    _layout = ("a <group>/<class>/*.jpg tree or a flat <class>/*.jpg folder (png works too), "
               "or a zip of one")

    def __init__(
        self,
        data_dir: str | None = None,
        ways: int = 5,
        shots: int = 1,
        query: int = 5,
        image_size: int = 28,
        channels: int | None = None,
        invert: bool | None = None,
        rotations: bool | None = None,
        eval_rotations: bool = False,
        within_group: bool = False,
        train_groups: Sequence[str] | str | None = None,
        val_groups: Sequence[str] | str | None = None,
        test_groups: Sequence[str] | str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        split_by: str | None = None,
        groups: Sequence[str] | str | None = None,
        exclude_groups: Sequence[str] | str | None = None,
        filters: int = 64,
        norm: str = "support",
        feature_gain: float = 1.0,
        cache: bool = True,
        cache_dir: str | None = None,
        jitter_degrees: float = 0.0,
        jitter_scale: float = 0.0,
        jitter_shift: float = 0.0,
        train_ways: Sequence[int | None] | str | None = None,
        train_shots: Sequence[int | None] | str | None = None,
        **aliases: Any,
    ) -> None:
        unknown = sorted(set(aliases) - set(GROUP_ALIASES))
        if unknown:
            valid = sorted([*inspect.signature(type(self).__init__).parameters][1:-1])
            raise SuiteError(f"suite {self.name!r} does not accept option(s) {', '.join(unknown)}; "
                             f"valid options: {', '.join(valid)}")
        given = {"within_group": within_group, "train_groups": train_groups, "val_groups": val_groups,
                 "test_groups": test_groups, "groups": groups, "exclude_groups": exclude_groups}
        for old, value in aliases.items():
            new = GROUP_ALIASES[old]
            if given[new] not in (None, False) and given[new] != value:
                raise ConfigError(f"{old} is the old name of {new}: give one of them")
            given[new] = value
        super().__init__(
            data_dir, ways, shots, query, image_size, channels, invert, rotations, eval_rotations,
            within_alphabet=given["within_group"], train_alphabets=given["train_groups"],
            val_alphabets=given["val_groups"], test_alphabets=given["test_groups"],
            val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed,
            split_by=split_by, alphabets=given["groups"], exclude_alphabets=given["exclude_groups"],
            filters=filters, norm=norm, feature_gain=feature_gain, cache=cache, cache_dir=cache_dir,
            jitter_degrees=jitter_degrees, jitter_scale=jitter_scale, jitter_shift=jitter_shift,
            train_ways=train_ways, train_shots=train_shots,
        )

    def split_groups(self) -> dict[str, list[str]]:
        """The groups of every split, after loading."""
        return self.split_alphabets()

