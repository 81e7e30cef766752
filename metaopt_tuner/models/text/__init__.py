"""Text for the intents suite (:mod:`metaopt_tuner.tasks.intents`): featurizers, models, baselines.

* :mod:`.featurizers`: hashed word and character n-grams (:class:`HashedNgrams`), offline and
  identical on every machine;
* :mod:`.encoders`: a local sentence-transformers folder (or ``module:function``) as a frozen
  featurizer, its sentence embeddings cached on disk;
* :mod:`.models`: the models adapted per task on those features (:class:`TextBagClassifier`
  on n-grams);
* :mod:`.transformer` and :mod:`.encoder_states`: an encoder's top layers adapted per task
  (:class:`EncoderTop`) over its lower layers' token states, cached per utterance and tied to
  the encoder folder by a content checksum;
* :mod:`.identity`: the encoder an artifact records (a name and that checksum, never a path);
* :mod:`.setfit_baseline`: SetFit on one episode from the same folder, the baseline people reach
  for (``pip install metaopt-tuner[setfit]``).

The encoder parts import their optional packages (``pip install metaopt-tuner[text]``) only
when used.
"""

from __future__ import annotations

from .featurizers import PAD_ID, HashedNgrams, pad_ids
from .identity import EncoderIdentity
from .models import TextBagClassifier
from .transformer import EncoderTop

__all__ = ["PAD_ID", "HashedNgrams", "pad_ids", "TextBagClassifier", "EncoderTop",
           "EncoderIdentity"]
