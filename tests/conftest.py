"""Shared fixtures: tiny datasets written in LightGCN text format, and an isolated environment
(no downloads, a private cache) for every test."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from lwbench import synthetic
from lwbench.data import build_interactions


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LWBENCH_OFFLINE", "1")
    monkeypatch.setenv("LWBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("LWBENCH_DATA", raising=False)
    torch.set_num_threads(1)  # tiny graphs: threading overhead exceeds the work, and CI has 2 cores


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
