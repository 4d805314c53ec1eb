"""Shared fixtures: tiny datasets written in LightGCN text format, and an isolated environment
(no downloads, a private cache) for every test."""
from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lwbench.data import synthetic
from lwbench.data.interactions import build_interactions
from lwbench.training.trainer import Trainer


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LWBENCH_OFFLINE", "1")
    monkeypatch.setenv("LWBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("LWBENCH_DATA", raising=False)
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):   # cli.main sets them for the processes it starts
        restore_after_test(monkeypatch, name)
    torch.set_num_threads(1)  # tiny graphs: threading overhead exceeds the work, and CI has 2 cores


def restore_after_test(monkeypatch, name: str) -> None:
    """Put environment variable ``name`` back as it is now (set or not) when the test ends, whatever the test
    (or the code it calls) does to it."""
    value = os.environ.get(name)
    monkeypatch.setenv(name, "")     # monkeypatch records the value to restore, even an absent one
    if value is None:
        monkeypatch.delenv(name)
    else:
        monkeypatch.setenv(name, value)


def write_lightgcn(path: Path, users: np.ndarray, items: np.ndarray, gz: bool = False) -> Path:
    lines = []
    for user in np.unique(users):
        lines.append(" ".join(str(x) for x in [user, *items[users == user]]))
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


TOY = dict(n_users=300, n_items=200, n_communities=6, min_degree=5, mean_degree=15, seed=3)


@pytest.fixture(scope="session")
def toy_raw():
    return synthetic.generate(**TOY)


@pytest.fixture(scope="session")
def toy(toy_raw):
    """Interactions of a small synthetic graph (300 users, 200 items)."""
    train, test = toy_raw
    return build_interactions("toy", train, test, n_users=TOY["n_users"], n_items=TOY["n_items"])


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory, toy_raw):
    """The toy dataset as a LightGCN-format folder (usable as --dataset PATH)."""
    folder = tmp_path_factory.mktemp("toydata") / "toy"
    folder.mkdir()
    train, test = toy_raw
    write_lightgcn(folder / "train.txt", train.users, train.items)
    write_lightgcn(folder / "test.txt.gz", test.users, test.items, gz=True)
    return folder


def crash_and_resume(make_trainer, name, crash_after, monkeypatch):
    """Kill a run (KeyboardInterrupt out of ``train_epoch``) after ``crash_after`` epochs, then resume it
    with a fresh trainer on the same work folder; ``make_trainer(name)`` returns a new trainer working in a
    folder named ``name``. Returns the resumed run's result."""
    original = Trainer.train_epoch
    calls = {"n": 0}

    def crashing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > crash_after:
            raise KeyboardInterrupt("simulated kill")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        make_trainer(name).fit()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    return make_trainer(name).fit()


def assert_same_outcome(resumed, reference, context=None):
    """Same reported checkpoint, epochs, per-checkpoint epochs and metrics, and final diagnostics."""
    assert resumed.reported == reference.reported
    assert resumed.schedule.epochs_run == reference.schedule.epochs_run
    for key, checkpoint in reference.checkpoints.items():
        assert resumed.checkpoints[key].epoch == checkpoint.epoch
        assert resumed.checkpoints[key].test == checkpoint.test, (context, key)
    assert resumed.diagnostics == reference.diagnostics


def assert_resumes_identically(reference, make_trainer, crash_points, monkeypatch):
    """A run killed after each number of epochs in ``crash_points`` and resumed gives ``reference``."""
    for crash_after in crash_points:
        resumed = crash_and_resume(make_trainer, f"crash{crash_after}", crash_after, monkeypatch)
        assert_same_outcome(resumed, reference, context=crash_after)


def count_stage_epochs(monkeypatch):
    """Patch ``Trainer.train_epoch`` to log ``(run seed, stage name)`` per trained epoch; returns the log."""
    trained = []
    original = Trainer.train_epoch

    def counting(self, stage, *args, **kwargs):
        trained.append((self.seed, stage.name))
        return original(self, stage, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", counting)
    return trained


@pytest.fixture
def isolated_registry():
    """The method registry as it was, restored after the test, so that a method the test registers (or a
    plugin module it loads) is not seen by other tests. Built-ins are discovered first, so that they are
    part of what is restored."""
    from lwbench import registry
    registry.discover()
    methods, discovered, modules = dict(registry._REGISTRY), registry._discovered, set(sys.modules)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(methods)
    registry._discovered = discovered
    for name in set(sys.modules) - modules:
        if name.startswith("lwbench_plugins."):
            del sys.modules[name]
