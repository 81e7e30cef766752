"""A textbook Prototypical Network (Snell et al., 2017) for Omniglot, with no library machinery.

4 x [3x3 conv with 64 filters, ``GroupNorm(1, 64)``, ReLU, 2x2 max-pool] on 28x28 images (a 64-d
embedding), squared Euclidean distance to the class means, 60-way 1-shot training episodes with 5
queries per class, every training character and its 90/180/270-degree rotations as classes, Adam at
1e-3 halved every quarter of the run (by episodes, or by seconds of this process's CPU time).
:func:`train` also takes other widths, shots and a device (``omniglot_small.py`` uses them).

Images are read here from the Omniglot zips (or an extracted ``<alphabet>/<character>/*.png``
tree): grayscale, resized to 28x28 with Lanczos and inverted to strokes of 1 on 0, exactly as the
library's Omniglot suite reads them, so ``omniglot_folds.py`` feeds both methods the same tensors.
A drawing present in two sources (Greek and Latin are in both minimal splits) is read once.

``omniglot_small.py``'s ProtoNet row uses this one too (:func:`conv4`, :func:`train`), fed that
script's training classes (the suite's training split of ``images_background_small1``: 136
characters and their rotations, 544 classes) with its ``--filters`` (32 in the cpu preset), its
``--protonet-ways`` (60) and the config's shots, on a GPU when it runs on one (seconds then are
wall-clock). It used ``protonet_reference.py`` until that script was removed in favour of this
one. That one normalized with ``GroupNorm(8, 64)`` (groups of 8 channels; or batch norm, its
only norm before 2026-12-03), annealed Adam's 1e-3 with a cosine over an episode count fixed by
the library's wall-clock ``--budget`` rule (a timed warm-up on a copy, its seconds counted in the
budget), and trained on the library's episodes (20-way by default standalone, 60-way from
``omniglot_small.py``) of small1 alone. Both used 28x28 images, rotations as training classes,
5 queries and no jitter. What each difference costs was not measured.

    python benchmarks/protonet_textbook.py --data-dir DIR --seconds 180 \
        --test-alphabets Japanese_(katakana),Sanskrit,Tagalog
"""

from __future__ import annotations

import argparse
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

#: {alphabet: {character: images [drawings, 1, 28, 28], float in [0, 1]}}
Characters = dict[str, dict[str, Tensor]]


def _decode(raw: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(raw)) as img:
        return 255 - np.asarray(img.convert("L").resize((size, size), Image.Resampling.LANCZOS))


def load_characters(data_dir: Path, size: int = 28) -> Characters:
    """Every ``<alphabet>/<character>/<drawing>.png`` in ``data_dir``'s zips and folders."""
    raws: dict[tuple[str, str, str], bytes] = {}
    for path in sorted(Path(data_dir).rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(data_dir).parts):
            continue
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                for name in zf.namelist():
                    parts = name.strip("/").split("/")
                    if name.endswith(".png") and len(parts) >= 3:
                        raws.setdefault(tuple(parts[-3:]), zf.read(name))
        elif path.suffix == ".png":
            raws.setdefault(tuple(path.parts[-3:]), path.read_bytes())
    chars: dict[str, dict[str, list[np.ndarray]]] = {}
    for (alphabet, char, _), raw in sorted(raws.items()):
        chars.setdefault(alphabet, {}).setdefault(char, []).append(_decode(raw, size))
    return {a: {c: torch.from_numpy(np.stack(v)).float().div(255).unsqueeze(1) for c, v in cs.items()}
            for a, cs in chars.items()}


def conv4(filters: int = 64) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1),
                   nn.GroupNorm(1, filters), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten())


def proto_logits(support: Tensor, y_support: Tensor, query: Tensor, ways: int) -> Tensor:
    """Negative squared Euclidean distances of the query embeddings to the class means."""
    counts = torch.bincount(y_support, minlength=ways).unsqueeze(1)
    means = support.new_zeros(ways, support.shape[1]).index_add_(0, y_support, support) / counts
    return -torch.cdist(query, means).square()


def rotated_classes(chars: Characters, alphabets: list[str]) -> list[Tensor]:
    """Every character of ``alphabets`` and its 90/180/270-degree rotations, as classes."""
    return [torch.rot90(images, k, dims=(-2, -1)) for a in alphabets for images in chars[a].values()
            for k in range(4)]


def train(classes: list[Tensor], seconds: float | None = None, episodes: int | None = None,
          ways: int = 60, query: int = 5, seed: int = 0, log_every: int = 0, filters: int = 64,
          shots: int = 1, device: str | torch.device = "cpu") -> tuple[nn.Module, int, float]:
    """Train for ``seconds`` of this process's CPU time (wall-clock on a GPU) or for ``episodes``;
    Adam 1e-3 halved after every quarter of the run. Returns ``(net, episodes trained, seconds)``."""
    if (seconds is None) == (episodes is None):
        raise ValueError("give seconds or episodes")
    device = torch.device(device)
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = conv4(filters).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    began, done = clock(), 0
    while True:
        progress = (clock() - began) / seconds if seconds else done / episodes
        if progress >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = 1e-3 * 0.5 ** min(3, int(4 * progress))
        picked = torch.randperm(len(classes), generator=gen)[:ways]
        draws = [classes[c][torch.randperm(len(classes[c]), generator=gen)[:shots + query]]
                 for c in picked]
        n = len(draws)
        x = torch.cat([d[:shots] for d in draws] + [d[shots:] for d in draws]).to(device)
        emb = net(x)
        labels = torch.arange(n, device=device)
        logits = proto_logits(emb[:n * shots], labels.repeat_interleave(shots), emb[n * shots:], n)
        loss = F.cross_entropy(logits, labels.repeat_interleave(query))
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        if log_every and done % log_every == 0:
            print(f"  episode {done}: loss {loss.item():.3f}, {clock() - began:.0f} s", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return net.eval(), done, clock() - began


@torch.no_grad()
def embed(net: nn.Module, x: Tensor) -> Tensor:
    return net.eval()(x)


def within_alphabet_episodes(chars: Characters, alphabets: list[str], count: int, ways: int = 20,
                             query: int = 5, seed: int = 0) -> list[tuple[Tensor, ...]]:
    """``count`` one-shot episodes ``(x_support, y_support, x_query, y_query, alphabet index)``,
    cycling through ``alphabets``; each draws ``min(ways, characters)`` of one alphabet's
    characters (as drawn, no rotation), one support and ``query`` query drawings of each."""
    gen = torch.Generator().manual_seed(seed)
    episodes = []
    for i in range(count):
        pool = list(chars[alphabets[i % len(alphabets)]].values())
        picked = torch.randperm(len(pool), generator=gen)[:ways]
        draws = [pool[c][torch.randperm(len(pool[c]), generator=gen)[:1 + query]] for c in picked]
        n = len(draws)
        episodes.append((torch.stack([d[0] for d in draws]), torch.arange(n),
                         torch.cat([d[1:] for d in draws]), torch.arange(n).repeat_interleave(query),
                         torch.tensor(i % len(alphabets))))
    return episodes


@torch.no_grad()
def score(net: nn.Module, episodes: list[tuple[Tensor, ...]]) -> Tensor:
    """Query accuracy of every episode ``[episodes]``."""
    accs = []
    for xs, ys, xq, yq, _ in episodes:
        logits = proto_logits(embed(net, xs), ys, embed(net, xq), int(ys.max()) + 1)
        accs.append((logits.argmax(1) == yq).float().mean())
    return torch.stack(accs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True, help="Omniglot zips or folders")
    p.add_argument("--test-alphabets", required=True, help="comma-separated; trained on the rest")
    p.add_argument("--seconds", type=float, default=None, help="CPU seconds of training")
    p.add_argument("--episodes", type=int, default=None, help="training episodes instead")
    p.add_argument("--test-episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.seconds is None and args.episodes is None:
        p.error("give --seconds or --episodes")
    torch.set_num_threads(1)
    chars = load_characters(args.data_dir)
    test = args.test_alphabets.split(",")
    classes = rotated_classes(chars, [a for a in sorted(chars) if a not in test])
    net, done, cpu = train(classes, args.seconds, args.episodes if args.seconds is None else None,
                           seed=args.seed, log_every=100)
    acc = score(net, within_alphabet_episodes(chars, test, args.test_episodes, seed=args.seed + 1))
    half = 1.96 * acc.std() / len(acc) ** 0.5
    print(f"{len(classes)} classes, {done} episodes, {cpu:.0f} CPU s: 20-way 1-shot "
          f"within-alphabet error {100 * (1 - acc.mean()):.1f} ± {100 * half:.1f}%")


if __name__ == "__main__":
    main()
