"""SetFit on one episode: the few-shot text library people reach for, as a baseline.

SetFit fine-tunes the whole sentence encoder contrastively on pairs of support utterances, then
fits a logistic-regression head on the new embeddings. It runs here with its default arguments on
the same local encoder folder the adapted model uses (never a download: Hugging Face's offline
mode is set), so the comparison is the same encoder, the same episodes. Needs the ``setfit``
extra (``pip install 'metaopt-tuner[setfit]'``).
"""

from __future__ import annotations

import math
import os
import tempfile

from ..errors import ConfigError
from ..tasks.intents import TextEpisode

__all__ = ["setfit_accuracy"]


def setfit_accuracy(encoder: str, episode: TextEpisode, pairs_fraction: float = 1.0,
                    seed: int = 0) -> float:
    """Query accuracy of SetFit trained on ``episode``'s support set, from ``encoder``.

    Args:
        encoder: a local sentence-transformers folder.
        episode: the support and query utterances.
        pairs_fraction: the share of SetFit's default number of training pairs to train on
            (1.0: its defaults; wide 5-shot episodes make tens of thousands of pairs).
        seed: SetFit's seed (pair sampling, head).

    Raises:
        ConfigError: ``setfit`` is not installed, or ``pairs_fraction`` is not in (0, 1].
    """
    if not 0.0 < pairs_fraction <= 1.0:
        raise ConfigError(f"pairs_fraction must be in (0, 1], got {pairs_fraction}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from datasets import Dataset
        from setfit import SetFitModel, Trainer, TrainingArguments
        from setfit.sampler import ContrastiveDataset
    except ImportError as exc:
        raise ConfigError("the SetFit baseline needs the setfit package: "
                          "pip install 'metaopt-tuner[setfit]'") from exc

    with tempfile.TemporaryDirectory(prefix="metaopt-setfit-") as scratch:
        # SetFit's training defaults; only its bookkeeping is silenced (no logging integrations,
        # no checkpoints, nothing written outside a scratch folder)
        args = TrainingArguments(seed=seed, output_dir=scratch, report_to="none",
                                 save_strategy="no", logging_strategy="no",
                                 show_progress_bar=False)
        if pairs_fraction < 1.0:
            pairs = len(ContrastiveDataset(episode.support_texts, episode.support_labels, False))
            args.max_steps = max(1, math.ceil(pairs_fraction * pairs / args.embedding_batch_size))
        model = SetFitModel.from_pretrained(encoder)
        data = Dataset.from_dict({"text": episode.support_texts, "label": episode.support_labels})
        Trainer(model=model, args=args, train_dataset=data).train()
    predicted = model.predict(episode.query_texts, as_numpy=True)
    hits = sum(int(p) == y for p, y in zip(predicted, episode.query_labels, strict=True))
    return hits / len(episode.query_labels)
