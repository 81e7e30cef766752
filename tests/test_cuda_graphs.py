"""CUDA-graph replay of meta-gradients (runs only where CUDA is available; the GPU benchmark
``benchmarks/omniglot_gpu.py`` repeats these checks at the issue's full size)."""

from __future__ import annotations

import pytest
import torch

from metaopt_tuner.training import MetaTrainer, TrainConfig
from metaopt_tuner.training.compiled import CompiledMetaGradient
from metaopt_tuner.training.cuda_graphs import GraphedMetaGradient

from .helpers import TinyImageSuite
from .helpers import seeded_learner as _learner

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _replays_match_eager(learner, graphed, suite, gen, batches):
    for _ in range(batches):
        batch = suite.sample(4, gen).to("cuda", torch.float64)
        eager = learner.meta_gradient(batch)
        replay = graphed(batch)
        assert torch.allclose(replay.loss, eager.loss, rtol=1e-9, atol=1e-12)
        for name, g in eager.grads.items():
            assert torch.allclose(replay.grads[name], g, rtol=1e-7, atol=1e-10), name


@pytest.mark.parametrize("learner_name, head_init", [
    ("maml", "theta"), ("metasgd", "theta"), ("reptile", "theta"),
    ("maml", "prototypes"), ("metasgd", "prototypes"),  # Reptile has no prototype head
])
def test_replay_equals_eager_on_new_batches(learner_name, head_init):
    suite = TinyImageSuite()
    learner = _learner(learner_name, suite, "batched", steps=2, head_init=head_init).cuda()
    graphed = GraphedMetaGradient(learner)
    gen = torch.Generator().manual_seed(5)
    _replays_match_eager(learner, graphed, suite, gen, 3)  # every replay must read the new inputs
    assert len(graphed) == 1
    graphed(suite.sample(2, gen).to("cuda", torch.float64))  # a new shape: a second graph
    assert len(graphed) == 2


def test_trainer_with_graphs_follows_the_eager_run():
    def run(cuda_graph):
        cfg = TrainConfig(learner="metasgd", iterations=20, meta_batch=5, inner_steps=2, eval_every=10,
                          eval_tasks=8, log_every=5, seed=3, suite_options={"shots": 5},
                          device="cuda", dtype="float64", cuda_graph=cuda_graph)
        return MetaTrainer(cfg, None, progress=False).run()

    eager, graphed = run(False), run(True)
    for name, value in eager.learner.state_dict().items():
        assert torch.allclose(graphed.learner.state_dict()[name], value, rtol=1e-6, atol=1e-9), name


@pytest.mark.parametrize("learner_name", ["maml", "metasgd"])
def test_replay_of_the_compiled_meta_gradient_equals_eager(learner_name):
    suite = TinyImageSuite()
    learner = _learner(learner_name, suite, "batched", steps=2, head_init="prototypes").cuda()
    graphed = GraphedMetaGradient(learner, fn=CompiledMetaGradient(learner))  # Inductor's kernels
    _replays_match_eager(learner, graphed, suite, torch.Generator().manual_seed(5), 2)
