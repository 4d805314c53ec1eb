"""Interaction data: the LightGCN text format, validation/test splitting, fingerprints.

A dataset is a pair of files ``train.txt[.gz]`` and ``test.txt[.gz]``, one line per user:
``uid iid iid ...`` with 0-based integer ids. All of train is training data; validation is carved
out of test (docs/protocol.md §1.3) with a split seed that is independent of the training seed.
"""
from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Interactions:
    """Binary user-item matrices of one dataset, all of shape ``(n_users, n_items)``.

    ``valid`` and ``test`` hold only users with at least one item in that split.
    """

    name: str
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    split_seed: int
    split_mode: str  # "fixed" (split_seed) or "legacy" (seeded with the run seed, docs/protocol.md §1.3)

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    @property
    def n_entities(self) -> int:
        return self.n_users + self.n_items

    def digest(self) -> str:
        """Hash of the three matrices (what a trained result depends on), for cache keys."""
        h = hashlib.sha256(f"{self.n_users},{self.n_items}".encode())
        for matrix in (self.train, self.valid, self.test):
            h.update(np.ascontiguousarray(matrix.indptr, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(matrix.indices, dtype=np.int64).tobytes())
        return h.hexdigest()

    def stats(self) -> "DatasetStats":
        return DatasetStats(name=self.name, n_users=self.n_users, n_items=self.n_items,
                            n_train=int(self.train.nnz), n_valid=int(self.valid.nnz),
                            n_test=int(self.test.nnz))


@dataclass(frozen=True)
class DatasetStats:
    """What a method may look at when sizing itself to a budget."""

    name: str
    n_users: int
    n_items: int
    n_train: int
    n_valid: int = 0
    n_test: int = 0

    @property
    def n_entities(self) -> int:
        return self.n_users + self.n_items


@dataclass(frozen=True)
class RawSplit:
    """Distinct (user, item) pairs of one file, sorted by user then item."""

    users: np.ndarray
    items: np.ndarray
    path: str
    empty_lines: int = 0  # lines naming a user but no item

    @property
    def n_pairs(self) -> int:
        return len(self.users)


def read_split(path: str | Path) -> RawSplit:
    """Read one LightGCN-format file, failing with the file and line of the first bad token."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    users, items = [], []
    empty_lines = 0
    try:
        with opener(path, "rt", encoding="ascii") as handle:
            for line_no, line in enumerate(handle, start=1):
                tokens = line.split()
                if not tokens:
                    continue
                try:
                    ids = np.array(tokens, dtype=np.int64)
                except (ValueError, OverflowError):
                    bad = next(t for t in tokens if not _is_int(t))
                    raise DataError(f"{path}:{line_no}: token {bad!r} is not an integer id "
                                    "(expected lines 'user item item ...')") from None
                if (ids < 0).any():
                    bad = int(ids[ids < 0][0])
                    raise DataError(f"{path}:{line_no}: negative id {bad}; ids must be 0-based")
                if len(ids) == 1:
                    empty_lines += 1
                users.append(np.full(len(ids) - 1, ids[0], dtype=np.int64))
                items.append(ids[1:])
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot read as LightGCN text ({exc})") from None
    if not users or sum(len(u) for u in users) == 0:
        raise DataError(f"{path}: no interactions found (empty file?)")
    u = np.concatenate(users)
    i = np.concatenate(items)
    stride = int(i.max()) + 1
    keys = np.unique(u * stride + i)  # sorts by (user, item) and drops duplicate pairs
    return RawSplit(users=keys // stride, items=keys % stride, path=str(path), empty_lines=empty_lines)


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


def fingerprint(users: np.ndarray, items: np.ndarray) -> str:
    """SHA-256 of the distinct pairs sorted by (user, item), each as the line ``u i\\n``."""
    order = np.lexsort((items, users))
    pairs = np.stack([users[order], items[order]], axis=1)
    if len(pairs):
        keep = np.ones(len(pairs), dtype=bool)
        keep[1:] = (np.diff(pairs, axis=0) != 0).any(axis=1)
        pairs = pairs[keep]
    text = "".join(f"{u} {i}\n" for u, i in pairs.tolist())
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def split_valid_test(test: sp.csr_matrix, seed: int, legacy: bool = False
                     ) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Carve validation out of the test matrix: per user a random ``max(1, ceil(n/3))`` items.

    Fixed mode draws all users' choices at once from ``numpy.random.default_rng(seed)``.
    Legacy mode replays the official code's per-user ``np.random.choice`` on the global numpy RNG
    seeded with the *run* seed (docs/protocol.md §1.3 pitfall), for reproducing published numbers.
    Users whose test list becomes empty are dropped from test (they keep their validation items).
    """
    test = test.tocsr()
    test.sort_indices()
    counts = np.diff(test.indptr)
    n_valid = np.where(counts > 0, np.maximum(1, np.ceil(counts / 3.0)), 0).astype(np.int64)
    rows = np.repeat(np.arange(test.shape[0]), counts)
    if legacy:
        np.random.seed(seed)
        is_valid = np.zeros(test.nnz, dtype=bool)
        for user in np.flatnonzero(counts):  # sequential on purpose: replays the official RNG stream
            start = test.indptr[user]
            picks = np.random.choice(counts[user], int(n_valid[user]), replace=False)
            is_valid[start + picks] = True
    else:
        keys = np.random.default_rng(seed).random(test.nnz)
        order = np.lexsort((keys, rows))  # within each user, a random permutation of its items
        rank = np.empty(test.nnz, dtype=np.int64)
        rank[order] = np.arange(test.nnz) - np.repeat(test.indptr[:-1], counts)
        is_valid = rank < n_valid[rows]
    shape = test.shape
    valid = sp.csr_matrix((np.ones(is_valid.sum(), dtype=np.float32),
                           (rows[is_valid], test.indices[is_valid])), shape=shape)
    rest = sp.csr_matrix((np.ones((~is_valid).sum(), dtype=np.float32),
                          (rows[~is_valid], test.indices[~is_valid])), shape=shape)
    return valid, rest


def build_interactions(name: str, train: RawSplit, test: RawSplit, *, n_users: int | None = None,
                       n_items: int | None = None, split_seed: int = 2024,
                       legacy_split_seed: int | None = None) -> Interactions:
    """Assemble the three matrices, checking that test ids lie inside the id range.

    The id range is ``n_users``/``n_items`` when given (a dataset card), else the training file's
    largest ids plus one. ``legacy_split_seed`` switches to the official seed-coupled split.
    """
    n_users = int(train.users.max()) + 1 if n_users is None else n_users
    n_items = int(train.items.max()) + 1 if n_items is None else n_items
    for split in (train, test):
        _check_range(split, n_users, n_items)
    shape = (n_users, n_items)
    train_m = _binary_csr(train, shape)
    test_m = _binary_csr(test, shape)
    if legacy_split_seed is None:
        valid, rest = split_valid_test(test_m, split_seed)
        seed, mode = split_seed, "fixed"
    else:
        valid, rest = split_valid_test(test_m, legacy_split_seed, legacy=True)
        seed, mode = legacy_split_seed, "legacy"
    return Interactions(name=name, train=train_m, valid=valid, test=rest, split_seed=seed, split_mode=mode)


def _check_range(split: RawSplit, n_users: int, n_items: int) -> None:
    for ids, limit, kind in ((split.users, n_users, "user"), (split.items, n_items, "item")):
        bad = np.flatnonzero(ids >= limit)
        if len(bad):
            raise DataError(
                f"{split.path}: {kind} id {int(ids[bad[0]])} (user {int(split.users[bad[0]])}) is outside "
                f"the id range 0..{limit - 1} given by the training file / dataset card")


def _binary_csr(split: RawSplit, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(split.n_pairs, dtype=np.float32), (split.users, split.items)), shape=shape)
    matrix.sort_indices()
    return matrix

