"""An image artifact's body as a frozen feature extractor: features for a probe (issue 27).

Runs every drawing of an Omniglot-style tree (``<alphabet>/<character>/*.png``, zips or folders)
through a trained artifact's ConvNet body and saves the features with their labels and a split by
alphabet, for ``head_step_variants.py --features``: the head's steps can then be meta-learned and
scored in feature space in minutes. Training characters get their four rotations as classes (as
the omniglot suite trains); ``--train-on val`` meta-trains on the validation alphabets instead
(with rotations), for heads that should learn from classes the body never saw.

    python benchmarks/body_features.py --artifact ART --data-dir ../shared/data/omniglot \\
        --test Balinese,Korean --val Tagalog --out runs/omniglot-features.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protonet_textbook as textbook  # noqa: E402

from metaopt_tuner.artifact import load_artifact  # noqa: E402
from metaopt_tuner.tasks.augment import random_affine  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", required=True, help="an image artifact (a ConvNet body)")
    p.add_argument("--data-dir", required=True, type=Path, help="the image tree")
    p.add_argument("--test", required=True, help="test alphabets, comma-separated")
    p.add_argument("--val", required=True, help="validation alphabets, comma-separated")
    p.add_argument("--train-on", choices=("train", "val"), default="train",
                   help="whose features the head's steps are meta-trained on")
    p.add_argument("--jitter", action="store_true",
                   help="training drawings jittered once each, as the omniglot recipe trains "
                        "(15 degrees, scale and shift 0.15)")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    art = load_artifact(args.artifact)
    body = art.initialize(art.build_model(), strict=False).eval()
    test, val = set(args.test.split(",")), set(args.val.split(","))
    chars = textbook.load_characters(args.data_dir)
    missing = sorted((test | val) - set(chars))
    if missing:
        p.error(f"not in {args.data_dir}: {', '.join(missing)}")
    emb, labels = [], []
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for alphabet, characters in chars.items():
            part = "test" if alphabet in test else "val" if alphabet in val else "train"
            rotations = 1 if part == "test" else 4
            for char, images in characters.items():
                for r in range(rotations):
                    name = f"{alphabet}/{char}/r{r}"
                    x = torch.rot90(images, r, (2, 3))
                    if args.jitter and part != "test":
                        x = random_affine(x, gen, 15.0, 0.15, 0.15)
                    emb.append(body.features(x))
                    labels += [name] * len(images)
                    split[part].append(name)
    if args.train_on == "val":  # meta-train on the validation classes, tune on them unrotated
        split["train"] = split["val"]
    split["val"] = [n for n in split["val"] if n.endswith("/r0")]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"emb": torch.cat(emb), "labels": labels, "split": split}, args.out)
    print(f"{args.out}: {len(labels)} images, " + ", ".join(f"{k} {len(v)} classes"
                                                             for k, v in split.items()))


if __name__ == "__main__":
    main()
