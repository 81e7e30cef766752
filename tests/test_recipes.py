"""Recipes, budgets, the thread rule and user suites: resolution order, sources, exact resume."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from metaopt_tuner.artifact import load_artifact
from metaopt_tuner.budget import (
    REPLANS,
    iterations_for_budget,
    look_every,
    parse_duration,
    replanned_iterations,
)
from metaopt_tuner.errors import ConfigError, SuiteError
from metaopt_tuner.tasks import get_suite, list_suites, suite_class, suite_ref
from metaopt_tuner.tasks.recipe import Recipe
from metaopt_tuner.threads import SMALL_MODEL_PARAMETERS, choose_threads
from metaopt_tuner.training import MetaTrainer, TrainConfig, recipe_for, resolve_train_config, train


def test_flags_override_the_recipe_which_overrides_the_defaults():
    resolved = resolve_train_config("sinusoid", {"inner_steps": 3, "meta_batch": None}, {"shots": 5})
    cfg, src = resolved.config, resolved.sources
    assert (cfg.learner, src["learner"]) == ("metasgd", "recipe")
    assert (cfg.per_step_lrs, src["per_step_lrs"]) == (True, "recipe")
    assert (cfg.inner_steps, src["inner_steps"]) == (3, "flag")
    assert (cfg.meta_batch, src["meta_batch"]) == (25, "default")  # None means "not given"
    assert (cfg.suite_options, src["suite_options.shots"]) == ({"shots": 5}, "flag")
    assert src["suite"] == "flag" and resolve_train_config().sources["suite"] == "default"
    assert any(line.startswith("inner_steps") and line.endswith("(flag)") for line in resolved.lines())


def test_suite_options_merge_key_by_key():
    resolved = resolve_train_config("omniglot", {}, {"filters": 32, "ways": 20})
    opts, src = resolved.config.suite_options, resolved.sources
    assert opts["filters"] == 32 and opts["ways"] == 20 and opts["jitter_degrees"] == 15.0
    assert src["suite_options.filters"] == "flag" and src["suite_options.jitter_degrees"] == "recipe"


def test_budget_and_iterations_are_one_choice():
    with pytest.raises(ConfigError, match="not both"):
        resolve_train_config("sinusoid", {"iterations": 5, "budget_seconds": 60.0})
    by_budget = resolve_train_config("sinusoid", {"budget_seconds": 60.0})  # recipe: iterations
    assert by_budget.config.budget_seconds == 60.0 and by_budget.sources["iterations"] == "default"
    assert any("fixed from the budget" in line for line in by_budget.lines())
    budget_recipe = Recipe(budget="20m")
    assert resolve_train_config("sinusoid", recipe=budget_recipe).config.budget_seconds == 1200.0
    exact = resolve_train_config("sinusoid", {"iterations": 7}, recipe=budget_recipe)
    assert exact.config.budget_seconds is None and exact.config.iterations == 7


@pytest.mark.parametrize("kwargs, message", [
    ({"config": {"inner_stepz": 3}}, "unknown key(s) in a recipe: inner_stepz"),
    ({"config": {"suite": "omniglot"}}, "unknown key(s) in a recipe: suite"),
    ({"config": {"iterations": 3}, "budget": "1m"}, "not both"),
    ({"budget": "5parsecs"}, "cannot read the budget"),
])
def test_bad_recipes_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Recipe(**kwargs)


@pytest.mark.parametrize("name", list_suites())
def test_every_registered_recipe_resolves_to_a_valid_config(name):
    recipe = recipe_for(name)
    resolved = resolve_train_config(name)
    for key, value in recipe.config.items():
        assert getattr(resolved.config, key) == value and resolved.sources[key] == "recipe"


def test_recipes_are_frozen_values():
    recipe = recipe_for("sinusoid")
    with pytest.raises(TypeError):
        recipe.config["inner_steps"] = 1  # type: ignore[index]
    assert "inner_steps" in repr(recipe)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("20m", 1200), ("2h", 7200), ("1.5m", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5parsecs", "90", "", "0s", "-3m", "m"])
def test_bad_durations(text):
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_iteration_count_for_a_budget():
    plan = iterations_for_budget(10.0, warmup_total=1.0, timed_steps=4, timed_seconds=0.4)
    assert plan.iterations == 90 and plan.seconds_per_iteration == pytest.approx(0.1)
    assert iterations_for_budget(1.0, 5.0, 2, 2.0).iterations == 1  # spent in the warm-up


class FakeClock:
    """A clock that advances ``tick`` seconds per reading: a step takes exactly one tick."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


class Stop(Exception):
    pass


def _config(**overrides) -> TrainConfig:
    base = dict(iterations=1000, meta_batch=4, inner_steps=2, per_step_lrs=True,
                meta_lr_schedule="cosine", suite_options={"hidden": [8, 8], "shots": 5},
                eval_every=1000, eval_tasks=4, log_every=1, checkpoint_every=5)
    return TrainConfig(**{**base, **overrides})


def test_a_budget_run_resumed_midway_equals_the_same_count_uninterrupted(tmp_path):
    full = MetaTrainer(_config(budget_seconds=0.5), tmp_path / "full", progress=False,
                       clock=FakeClock(0.01)).run()
    count = full.config.iterations
    marker = json.loads((tmp_path / "full" / "run.json").read_text())
    assert marker["budget"]["iterations"] == count == marker["config"]["iterations"]
    assert 10 < count < 50  # (0.5 s - warm-up) / 0.01 s per step
    plain = MetaTrainer(_config(iterations=count), tmp_path / "plain", progress=False).run()

    def stop_at_7(record):
        if record["iteration"] == 7:
            raise Stop

    with pytest.raises(Stop):
        MetaTrainer(_config(budget_seconds=0.5), tmp_path / "cut", progress=False,
                    clock=FakeClock(0.01), callback=stop_at_7).run()
    # the resumed run continues from the recorded plan and the budget's recorded seconds
    resumed = MetaTrainer(_config(budget_seconds=0.5), tmp_path / "cut", progress=False,
                          clock=FakeClock(0.01)).run(resume=True)
    assert resumed.config.iterations == count
    a, b, c = (r.learner.state_dict() for r in (full, plain, resumed))
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key
    # resumed with a count instead of the budget, it trains to that count (it stopped with an
    # AssertionError at its first look at a budget it no longer had)
    longer = MetaTrainer(_config(iterations=count + 5), tmp_path / "cut", progress=False).run(
        resume=True)
    assert longer.config.iterations == count + 5


class SlowingClock(FakeClock):
    """A step takes ``tick`` seconds, and ``slow`` times as long once ``after`` readings have
    passed: other work starting halfway through a run."""

    def __init__(self, tick: float, after: int, slow: float) -> None:
        super().__init__(tick)
        self.readings, self.after, self.slow = 0, after, slow

    def __call__(self) -> float:
        self.readings += 1
        self.now += self.tick * (self.slow if self.readings > self.after else 1.0)
        return self.now


def test_a_budget_is_replanned_when_the_machine_slows_down(tmp_path):
    """Steps take 0.01 s, then 0.04 s from halfway: the run re-plans its count down, records
    each decision, and its steps (the warm-up included) spend the budget, not four times it."""
    budget = 1.0
    steady = MetaTrainer(_config(budget_seconds=budget), tmp_path / "steady", progress=False,
                         clock=FakeClock(0.01))
    planned = steady.run().config.iterations
    assert steady.budget_replans == []  # a steady speed never changes the count
    clock = SlowingClock(0.01, after=planned, slow=4.0)  # two readings a step: slower halfway
    slowed = MetaTrainer(_config(budget_seconds=budget), tmp_path / "slowed", progress=False,
                         clock=clock)
    result = slowed.run()
    assert slowed.budget_replans and result.config.iterations < 0.8 * planned
    assert all(r["iterations"] < planned for r in slowed.budget_replans)
    assert 0.9 * budget <= slowed._budget_spent <= 1.05 * budget
    saved = torch.load(tmp_path / "slowed" / "checkpoint.pt", weights_only=False)
    assert saved["budget_replans"] == slowed.budget_replans
    assert saved["budget_next_look"] == slowed._budget_next_look > saved["iteration"]


def test_a_replan_tolerance_is_seconds_and_looks_are_spaced_in_seconds():
    # at a steady speed a wobble of the rate changes nothing
    assert replanned_iterations(4.0, 2.0, 200, 400, 0.01) == 400
    assert replanned_iterations(4.0, 2.0, 200, 400, 0.0101) == 400
    # 4 iterations were within 2% of a count planned at 0.01 s, but at 0.06 s they are 6% of the
    # budget: the count is re-planned
    assert replanned_iterations(4.0, 3.7, 230, 239, 0.06) == 235
    assert replanned_iterations(4.0, 3.7, 230, 239, 0.0) == 239  # speed unknown
    # the next look is 1/REPLANS of the budget's seconds away at the speed measured
    assert look_every(4.0, 0.01, 400) == 400 // REPLANS == 20
    assert look_every(4.0, 0.04, 400) == 5  # four times slower: four times fewer iterations
    assert look_every(4.0, 0.0, 400) == 20 and look_every(1.0, 1.0, 10) == 1


class LoadClock(FakeClock):
    """A step takes ``tick`` seconds times the factor of the last of ``stages`` (budget seconds
    spent, factor) the trainer's recorded spending has reached: load that rises as a run goes."""

    def __init__(self, tick: float, stages: list[tuple[float, float]]) -> None:
        super().__init__(tick)
        self.stages, self.trainer = stages, None

    def __call__(self) -> float:
        spent = getattr(self.trainer, "_budget_spent", None)
        factor = max([f for at, f in self.stages if spent is not None and spent >= at], default=1.0)
        self.now += self.tick * factor
        return self.now


def test_a_budget_keeps_its_word_when_the_machine_slows_down_twice():
    """Steps take 0.01 s, 0.04 s from half the budget and 0.06 s from 7/8 of it. Looks spaced by
    the count planned at the first speed came every ~0.7 s after the slowdown, and the last one
    ignored a change of 2% of that count (0.24 s at the last speed): the run spent 108% of its
    budget. Spaced in seconds, with a tolerance in seconds, it keeps within 5%."""
    budget = 4.0
    clock = LoadClock(0.01, [(2.0, 4.0), (3.5, 6.0)])
    config = dataclasses.replace(_config(budget_seconds=budget), checkpoint_every=100_000,
                                 log_every=100_000)
    trainer = MetaTrainer(config, None, progress=False, clock=clock)
    clock.trainer = trainer
    looks: list[float] = []
    replan = trainer._replan

    def watched(since):
        looks.append(trainer._budget_spent)
        return replan(since)

    trainer._replan = watched
    trainer.run()
    assert 0.95 * budget <= trainer._budget_spent <= 1.05 * budget
    assert len(trainer.budget_replans) >= 2
    # one window straddling a slowdown aside, the looks stay 1/REPLANS of the budget apart
    gaps = [b - a for a, b in zip(looks, looks[1:]) if a >= 2.0]
    assert max(gaps) <= 2 * budget / REPLANS


@pytest.mark.slow
def test_a_budget_keeps_its_word_when_a_cpu_hog_starts_halfway(tmp_path):
    """The sinusoid recipe for a 16 s budget, with one spinning process per CPU started halfway:
    the run re-plans after the hog starts, and its budget clock (the warm-up and the steps, what
    the trainer controls and records) ends within 5% of the budget having used at least 90% of
    it. The run's own wall time adds evaluations and checkpoints (a fraction of a second)."""
    budget = 16.0
    config = resolve_train_config("sinusoid", {"budget_seconds": budget}).config
    out = tmp_path / "run"
    trainer = MetaTrainer(config, out, progress=False)
    hogs: list[subprocess.Popen] = []
    hog_from: dict[str, float] = {}

    def start_hogs() -> None:
        hog_from["iteration"] = trainer.iteration
        hog_from["spent"] = trainer._budget_spent or 0.0
        spin = f"import time\nend = time.time() + {budget + 60}\nwhile time.time() < end: pass"
        for _ in range(os.cpu_count() or 1):  # they end on their own should this process die
            hogs.append(subprocess.Popen([sys.executable, "-c", spin]))

    timer = threading.Timer(budget / 2, start_hogs)
    began = time.perf_counter()
    timer.start()
    try:
        result = trainer.run()
    finally:
        timer.cancel()
        timer.join()
        for hog in hogs:
            hog.kill()
            hog.wait()
    wall = time.perf_counter() - began
    spent = trainer._budget_spent
    assert hog_from, "the run ended before the hog started"
    after = [r for r in trainer.budget_replans if r["iteration"] > hog_from["iteration"]]
    print(f"\nbudget {budget:g} s: wall {wall:.2f} s ({wall / budget:.1%}), budget clock "
          f"{spent:.2f} s ({spent / budget:.1%}); planned {trainer.budget_plan.iterations}, ran "
          f"{result.config.iterations}; hog from iteration {hog_from['iteration']} "
          f"({hog_from['spent']:.2f} s); re-plans {trainer.budget_replans}")
    assert after, "no re-plan after the hog started"
    assert 0.9 * budget <= spent <= 1.05 * budget
    # evaluations, checkpoints and the folder are outside the budget's clock (see ``budget``)
    assert spent <= wall <= 1.05 * budget + 1.5
    assert trainer.iteration == result.config.iterations
    # every decision is in the checkpoint, so --resume continues from the plan in force
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["budget_replans"] == trainer.budget_replans
    assert saved["budget_spent"] == pytest.approx(spent)
    assert load_artifact(out / "artifact").manifest["metrics"]["iteration"] == trainer.iteration


def test_train_records_where_each_value_came_from(tmp_path):
    out = tmp_path / "run"
    result = train(out_dir=out, iterations=3, meta_batch=2, inner_steps=2, eval_every=3,
                   eval_tasks=2, suite_options={"hidden": [8]})
    assert result.config.per_step_lrs is True  # from the sinusoid recipe
    marker = json.loads((out / "run.json").read_text())
    assert marker["sources"]["per_step_lrs"] == "recipe"
    assert marker["sources"]["inner_steps"] == "flag" and marker["sources"]["dtype"] == "default"
    # an explicit TrainConfig runs as it is: no recipe
    assert train(TrainConfig(iterations=2, meta_batch=2, eval_tasks=2)).config.per_step_lrs is False


def test_the_thread_rule():
    assert choose_threads(None, 1_700) == 1
    assert choose_threads(None, SMALL_MODEL_PARAMETERS) is None  # torch's default
    assert choose_threads(None, None) is None
    assert choose_threads(3, 1_700) == 3


def test_user_suites_by_module_path():
    path = "tests.helpers:TinyImageSuite"
    suite = get_suite(path, ways=2)
    assert suite.ways == 2 and suite_ref(suite) == path
    assert suite_ref(get_suite("sinusoid")) == "sinusoid"
    with pytest.raises(SuiteError, match="cannot import suite 'a.b:C'"):
        suite_class("a.b:C")
    with pytest.raises(SuiteError, match="not a TaskSuite subclass"):
        suite_class("metaopt_tuner.models:MLP")
    with pytest.raises(SuiteError, match="unknown suite 'nope'"):
        suite_class("nope")


def test_intents_with_an_encoder_folder_gets_the_encoder_recipe(tmp_path):
    from metaopt_tuner.tasks.intents import ENCODER_RECIPE, ENCODER_TOP_RECIPE, RECIPE

    folder = tmp_path / "encoder"
    folder.mkdir()
    resolved = resolve_train_config("intents", {"meta_batch": 2}, {"encoder": str(folder)})
    cfg, src = resolved.config, resolved.sources
    assert recipe_for("intents", {"encoder": str(folder)}) is ENCODER_RECIPE
    # frozen embeddings; the head alone adapts, in ten steps, on episodes of every shape
    assert (cfg.inner_params, cfg.head_init, cfg.inner_steps) == ("head", "prototypes", 10)
    assert (cfg.suite_options["adapt_layers"], src["suite_options.adapt_layers"]) == (0, "recipe")
    assert cfg.suite_options["train_shots"] == [1, 50]
    assert cfg.step_loss_weight > 0
    assert (cfg.meta_batch, src["meta_batch"]) == (2, "flag")
    # asking for the top layer to be meta-learned gives the gentle recipe made for it
    top = resolve_train_config("intents", {}, {"encoder": str(folder), "adapt_layers": 1})
    assert recipe_for("intents", {"encoder": str(folder), "adapt_layers": 1}) is ENCODER_TOP_RECIPE
    assert (top.config.meta_lr, top.sources["meta_lr"]) == (1e-4, "recipe")
    assert top.config.suite_options["adapt_layers"] == 1
    # hashed n-grams, a module:function encoder or a missing folder keep the n-gram recipe
    for options in ({}, {"encoder": "hashed"}, {"encoder": "tests.fake_encoder:encode"},
                    {"encoder": str(tmp_path / "missing")}):
        assert recipe_for("intents", options) is RECIPE
    assert "adapt_layers" not in resolve_train_config("intents").config.suite_options
