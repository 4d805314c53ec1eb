"""Interaction data: the LightGCN text format, checks, cold entities, validation/test splitting, fingerprints.

A dataset is a pair of files ``train.txt[.gz]`` and ``test.txt[.gz]``, one line per user:
``uid iid iid ...`` with 0-based integer ids. All of train is training data; validation is carved
out of test (docs/protocol.md §1.3) with a split seed that is independent of the training seed, or,
with ``valid_from="file"``, read from a third file ``valid.txt[.gz]`` (then all of test is tested).
The id range spans train and test together, so items or users that occur only in test ("cold",
docs/protocol.md §1.2) keep a row and stay in the candidate pool.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

COLD_MODES = ("keep", "drop")
OVERLAP_MODES = ("error", "drop")
VALID_MODES = ("test", "file")   # validation carved out of test (default, §1.3) or read from valid.txt[.gz]
SPARSE_ID_FACTOR, SPARSE_ID_SLACK = 10, 1000   # largest id allowed: 10 x distinct ids + 1000 (§1.2)
BOM = b"\xef\xbb\xbf"


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Interactions:
    """Binary user-item matrices of one dataset, all of shape ``(n_users, n_items)``.

    ``valid`` and ``test`` hold only users with at least one item in that split. ``checks`` counts what
    loading found or changed (cold entities, dropped pairs), for the plan and every record.
    """

    name: str
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    split_seed: int
    split_mode: str  # "fixed" (split_seed) or "legacy" (seeded with the run seed, docs/protocol.md §1.3)
    checks: dict = field(default_factory=dict)

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

    def stats(self) -> DatasetStats:
        cold_items, cold_users = cold_counts(self.train, self.valid + self.test)
        return DatasetStats(name=self.name, n_users=self.n_users, n_items=self.n_items,
                            n_train=int(self.train.nnz), n_valid=int(self.valid.nnz),
                            n_test=int(self.test.nnz), cold_items=cold_items, cold_users=cold_users)


@dataclass(frozen=True)
class DatasetStats:
    """What a method may look at when sizing itself to a budget; the plan and records state it."""

    name: str
    n_users: int
    n_items: int
    n_train: int
    n_valid: int = 0
    n_test: int = 0
    cold_items: int = 0  # items without a training pair (docs/protocol.md §1.2)
    cold_users: int = 0  # users with validation/test pairs but no training pair

    @property
    def n_entities(self) -> int:
        return self.n_users + self.n_items

    def describe(self) -> str:
        density = (self.n_train + self.n_valid + self.n_test) / max(1, self.n_users * self.n_items)
        return (f"{self.n_users:,} users, {self.n_items:,} items, {self.n_train:,} train / {self.n_valid:,} "
                f"valid / {self.n_test:,} test pairs, density {density:.6f}, {self.cold_items:,} cold items "
                f"(no training pair), {self.cold_users:,} cold users")


def cold_counts(train: sp.csr_matrix, held_out: sp.csr_matrix) -> tuple[int, int]:
    """(items without a training pair, users with held-out pairs but no training pair)."""
    train_items = np.zeros(train.shape[1], dtype=bool)
    train_items[train.indices] = True
    has_train = np.diff(train.tocsr().indptr) > 0
    has_held = np.diff(held_out.tocsr().indptr) > 0
    return int((~train_items).sum()), int((has_held & ~has_train).sum())


@dataclass(frozen=True)
class RawSplit:
    """Distinct (user, item) pairs of one file, sorted by user then item.

    ``line_users``/``line_ptr``/``line_items`` keep the file's own line and item order (the official
    loader's validation draw depends on it, docs/protocol.md §1.3); ``line_numbers`` name lines in errors.
    When absent (generated data), the file is taken to be the sorted pairs, one line per user.
    """

    users: np.ndarray
    items: np.ndarray
    path: str
    empty_lines: int = 0  # lines naming a user but no item
    line_users: np.ndarray | None = None
    line_ptr: np.ndarray | None = None
    line_items: np.ndarray | None = None
    line_numbers: np.ndarray | None = None

    @property
    def n_pairs(self) -> int:
        return len(self.users)

    def lines(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user of each line, offsets into the items, items in file order)."""
        if self.line_users is not None:
            return self.line_users, self.line_ptr, self.line_items
        line_users, starts = np.unique(self.users, return_index=True)
        return line_users, np.append(starts, len(self.users)), self.items

    def where(self, user: int) -> str:
        """``path:line`` of the first line of ``user`` (or ``path`` when lines are not known)."""
        if self.line_users is None:
            return self.path
        return f"{self.path}:{int(self.line_numbers[np.flatnonzero(self.line_users == user)[0]])}"


def read_split(path: str | Path) -> RawSplit:
    """Read one LightGCN-format file, failing with the file and line of the first bad token.

    A UTF-8 byte-order mark is skipped; any other non-ASCII byte is an error (Python's ``int`` would
    accept non-ASCII digits such as '٣', which no other loader reads the same way)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    line_users, line_items, line_numbers = [], [], []
    empty_lines = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, line in enumerate(handle, start=1):
                if line_no == 1 and line.startswith(BOM):
                    line = line[len(BOM):]
                if not line.isascii():
                    col = next(k for k, byte in enumerate(line) if byte > 127)
                    raise DataError(f"{path}:{line_no}: non-ASCII byte 0x{line[col]:02x} at column {col + 1}; "
                                    "ids must be ASCII digits (re-save the file as plain ASCII)")
                tokens = line.split()
                if not tokens:
                    continue
                ids = _parse_ids(tokens, path, line_no)
                if len(ids) == 1:
                    empty_lines += 1
                line_users.append(ids[0])
                line_items.append(ids[1:])
                line_numbers.append(line_no)
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise DataError(f"{path}: cannot read as LightGCN text ({exc})") from None
    if not line_users or sum(len(i) for i in line_items) == 0:
        raise DataError(f"{path}: no interactions found (empty file?)")
    counts = np.array([len(i) for i in line_items], dtype=np.int64)
    line_users = np.array(line_users, dtype=np.int64)
    items = np.concatenate(line_items)
    _reject_rated_lines(path, line_users, line_numbers, counts)
    users = np.repeat(line_users, counts)
    order = np.lexsort((items, users))
    users, items_sorted = users[order], items[order]
    keep = np.ones(len(users), dtype=bool)
    keep[1:] = (np.diff(users) != 0) | (np.diff(items_sorted) != 0)   # drop duplicate pairs
    return RawSplit(users=users[keep], items=items_sorted[keep], path=str(path), empty_lines=empty_lines,
                    line_users=line_users, line_ptr=np.concatenate([[0], np.cumsum(counts)]),
                    line_items=items, line_numbers=np.array(line_numbers, dtype=np.int64))


def _reject_rated_lines(path: Path, line_users: np.ndarray, line_numbers: list[int], counts: np.ndarray) -> None:
    """Fail on 'user item rating [time]' lines (one pair per line with values beside it, as SELFRec's
    'user item 1' and MovieLens store them): read as LightGCN text, every value would become an item of
    its user. LightGCN text has one line per user; lines that all have three or four fields and repeat a
    user are taken for the other layout. ('user item' lines that repeat users read correctly.)"""
    if counts[0] not in (2, 3) or (counts != counts[0]).any():
        return
    _, first, seen = np.unique(line_users, return_index=True, return_counts=True)
    if (seen == 1).all():
        return
    repeat = int(np.flatnonzero(seen > 1)[0])
    later = np.flatnonzero(line_users == line_users[first[repeat]])[1]
    header = "user item rating" if counts[0] == 2 else "user item rating timestamp"
    raise DataError(f"{path}: every line has {counts[0] + 1} fields and users repeat across lines (user "
                    f"{line_users[first[repeat]]} on lines {line_numbers[first[repeat]]} and {line_numbers[later]}): "
                    "this looks like one pair per line with a rating, count or time beside it, not LightGCN's "
                    "one line per user 'user item item ...', which would read those values as items. Convert it "
                    f"with `lwbench prepare`: add the header line '{header}', name the file .csv and pass "
                    "--sep ' ' (docs/adding-a-dataset.md)")


def _parse_ids(tokens: list[bytes], path: Path, line_no: int) -> np.ndarray:
    for token in tokens:
        if not token.isdigit() and not (token[:1] == b"-" and token[1:].isdigit()):
            raise DataError(f"{path}:{line_no}: token {token.decode()!r} is not an integer id "
                            "(expected lines 'user item item ...')")
        if token[:1] == b"-":
            raise DataError(f"{path}:{line_no}: negative id {token.decode()}; ids must be 0-based")
        if len(token) > 18 and int(token) >= 2 ** 63:
            raise DataError(f"{path}:{line_no}: id {token.decode()} does not fit a 64-bit integer; remap the ids "
                            "with `lwbench prepare` (docs/adding-a-dataset.md)")
    return np.array(tokens, dtype=np.int64)


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


def validation_size(counts: np.ndarray) -> np.ndarray:
    """``max(1, ceil(n/3))`` validation items of a user with ``n`` test items (0 for none), §1.3."""
    return np.where(counts > 0, np.maximum(1, np.ceil(counts / 3.0)), 0).astype(np.int64)


def split_valid_test(test: sp.csr_matrix, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Carve validation out of the test matrix: per user a random ``max(1, ceil(n/3))`` items, all users'
    choices drawn at once from ``numpy.random.default_rng(seed)`` (docs/protocol.md §1.3).
    Users whose test list becomes empty are dropped from test (they keep their validation items)."""
    test = test.tocsr()
    test.sort_indices()
    counts = np.diff(test.indptr)
    rows = np.repeat(np.arange(test.shape[0]), counts)
    keys = np.random.default_rng(seed).random(test.nnz)
    order = np.lexsort((keys, rows))  # within each user, a random permutation of its items
    rank = np.empty(test.nnz, dtype=np.int64)
    rank[order] = np.arange(test.nnz) - np.repeat(test.indptr[:-1], counts)
    is_valid = rank < validation_size(counts)[rows]
    return (_csr(rows[is_valid], test.indices[is_valid], test.shape),
            _csr(rows[~is_valid], test.indices[~is_valid], test.shape))


def legacy_split(test: RawSplit, seed: int, shape: tuple[int, int],
                 keep: np.ndarray | None = None) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The official loader's split, pair for pair (docs/protocol.md §1.3): the global numpy RNG seeded with
    the run seed; per test line in file order, its items as ``list(set(items))`` (CPython's set order, which
    depends on the items' insertion order, not their sorted order), then ``np.random.choice`` of
    ``max(1, ceil(n/3))`` of them. ``keep`` (a mask over the file-order items) removes dropped pairs first.
    Sequential on purpose: it replays the official RNG stream line by line."""
    line_users, ptr, items = test.lines()
    distinct, repeats = np.unique(line_users, return_counts=True)
    if (repeats > 1).any():
        dup = int(distinct[repeats > 1][0])
        raise DataError(f"{test.where(dup)}: user {dup} has more than one line; --legacy-split replays the "
                        "official loader, which needs one line per user (merge the lines)")
    np.random.seed(seed)
    valid_pairs, test_pairs = ([], []), ([], [])
    for user, start, end in zip(line_users.tolist(), ptr[:-1].tolist(), ptr[1:].tolist()):
        line = items[start:end] if keep is None else items[start:end][keep[start:end]]
        ordered = list(set(line.tolist()))
        if not ordered:
            continue
        picked = np.random.choice(ordered, size=int(validation_size(np.array([len(ordered)]))[0]), replace=False)
        chosen = set(picked.tolist())
        for pairs, part in ((valid_pairs, picked.tolist()), (test_pairs, [i for i in ordered if i not in chosen])):
            pairs[0].extend([user] * len(part))
            pairs[1].extend(part)
    return _csr(*valid_pairs, shape), _csr(*test_pairs, shape)


def build_interactions(name: str, train: RawSplit, test: RawSplit, *, n_users: int | None = None,
                       n_items: int | None = None, split_seed: int = 2024, legacy_split_seed: int | None = None,
                       cold: str = "keep", overlap: str = "error", valid: RawSplit | None = None) -> Interactions:
    """Check the splits, then assemble the three matrices.

    The id range is ``n_users``/``n_items`` when given (a dataset card; an id beyond it is an error), else
    the largest id over train, test (and ``valid``) plus one (docs/protocol.md §1.2). Test pairs also in
    train are an error unless ``overlap="drop"``; ``cold="drop"`` removes test pairs of cold users and items.
    ``legacy_split_seed`` switches to the official seed-coupled split. ``valid``: a validation file of the
    dataset's own (``--valid-from file``): it is the validation set, all of ``test`` is the test set, and its
    pairs follow the same rules (ids in range; pairs also in train or in test are an error unless
    ``overlap="drop"``, which removes them from validation; cold pairs go with ``cold="drop"``); the
    checks then say ``valid_from = "file"`` (absent by default, so default configurations keep their hash).
    Every check runs before training.
    """
    if cold not in COLD_MODES or overlap not in OVERLAP_MODES:
        raise DataError(f"cold={cold!r}, overlap={overlap!r}: expected cold in {COLD_MODES}, overlap in "
                        f"{OVERLAP_MODES}")
    if valid is not None and legacy_split_seed is not None:
        raise DataError("--legacy-split draws validation out of test.txt as the official code does; it cannot be "
                        f"combined with a validation file ({valid.path}, --valid-from file): drop one of them")
    splits = (train, test) if valid is None else (train, test, valid)
    if n_users is None or n_items is None:
        _check_dense_ids(*splits)
    n_users = max(int(s.users.max()) for s in splits) + 1 if n_users is None else n_users
    n_items = max(int(s.items.max()) for s in splits) + 1 if n_items is None else n_items
    for split in splits:
        _check_range(split, n_users, n_items)
    shape = (n_users, n_items)
    train_m = _csr(train.users, train.items, shape)
    test_keep = _test_pairs_to_keep(train, test, train_m, cold, overlap)
    checks = {"cold": cold, "overlap": overlap,
              "overlap_dropped": test_keep.pop("overlap"), "cold_dropped": test_keep.pop("cold")}
    mask = test_keep["pairs"]
    if not mask.any():
        raise DataError(_all_dropped(test, "test", checks["cold_dropped"], checks["overlap_dropped"]))
    if valid is not None:
        rest = _csr(test.users[mask], test.items[mask], shape)
        valid_m, dropped = _valid_pairs(train, valid, train_m, rest, cold, overlap)
        checks.update(valid_from="file", valid_overlap_dropped=dropped["overlap"], valid_cold_dropped=dropped["cold"])
        seed, mode = split_seed, "fixed"
    elif legacy_split_seed is None:
        valid_m, rest = split_valid_test(_csr(test.users[mask], test.items[mask], shape), split_seed)
        seed, mode = split_seed, "fixed"
    else:
        valid_m, rest = legacy_split(test, legacy_split_seed, shape, keep=test_keep["lines"])
        seed, mode = legacy_split_seed, "legacy"
    checks["users_without_test"] = _check_test_users(test, valid_m, rest, checks, from_file=valid is not None)
    inter = Interactions(name=name, train=train_m, valid=valid_m, test=rest, split_seed=seed, split_mode=mode,
                         checks=checks)
    for kind in ("overlap", "cold"):
        if checks[f"{kind}_dropped"]:
            logger.warning("%s: dropped %d %s test pairs (--%s drop)", test.path, checks[f"{kind}_dropped"],
                           "train/test overlapping" if kind == "overlap" else "cold", kind)
        if checks.get(f"valid_{kind}_dropped"):
            logger.warning("%s: dropped %d validation pairs %s (--%s drop)", valid.path, checks[f"valid_{kind}_dropped"],
                           "also in train or test" if kind == "overlap" else "of cold users or items", kind)
    return inter


def _all_dropped(split: RawSplit, what: str, cold: int, overlap: int) -> str:
    """The error when --cold drop / --overlap drop removed every pair of a split: what happened, what to change."""
    parts = [f"{n:,} {why}" for n, why in ((cold, "as cold (a user or item without a training pair, --cold drop)"),
                                             (overlap, "as also training pairs (--overlap drop)")) if n]
    change = [flag for n, flag in ((cold, "keep cold pairs with --cold keep (the default: the official loaders "
                                          "keep them)"),
                                   (overlap, "fix the split so that its pairs are unseen in training")) if n]
    return (f"{split.path}: all {split.n_pairs:,} {what} pairs were dropped, {' and '.join(parts)}; nothing is left "
            f"to {'test' if what == 'test' else 'validate on'}. To change it: {'; or '.join(change)}")


def _valid_pairs(train: RawSplit, valid: RawSplit, train_m: sp.csr_matrix, test_m: sp.csr_matrix, cold: str,
                 overlap: str) -> tuple[sp.csr_matrix, dict]:
    """The validation matrix of a validation file, checked like test: pairs also in train or in test are an
    error (or dropped from validation with ``overlap="drop"``), cold pairs are dropped with ``cold="drop"``."""
    in_train = np.asarray(train_m[valid.users, valid.items]).ravel() > 0
    in_test = np.asarray(test_m[valid.users, valid.items]).ravel() > 0
    for found, other in ((in_train, "training"), (in_test, "test")):
        if found.any() and overlap == "error":
            k = np.flatnonzero(found)[0]
            raise DataError(f"{valid.where(int(valid.users[k]))}: {int(found.sum()):,} validation pairs are also "
                            f"{other} pairs (e.g. user {int(valid.users[k])}, item {int(valid.items[k])}); a "
                            f"validation pair must be unseen in training and apart from test: fix the split, or pass "
                            "--overlap drop to remove them from validation")
    train_items = np.bincount(train.items, minlength=train_m.shape[1]) > 0
    train_users = np.diff(train_m.indptr) > 0
    is_cold = (~train_items[valid.items] | ~train_users[valid.users]) & ~in_train & ~in_test
    keep = ~in_train & ~in_test & ~(is_cold if cold == "drop" else np.zeros_like(is_cold))
    dropped = {"overlap": int((in_train | in_test).sum()), "cold": int(is_cold.sum()) if cold == "drop" else 0}
    if not keep.any():
        raise DataError(_all_dropped(valid, "validation", dropped["cold"], dropped["overlap"]))
    return _csr(valid.users[keep], valid.items[keep], train_m.shape), dropped


def _check_dense_ids(*splits: RawSplit) -> None:
    """Ids far beyond the number of distinct ids (a raw 64-bit key, a sparse id space) would size every
    table by the largest id: an error pointing to ``prepare``, which remaps ids (docs/protocol.md §1.2).
    Rule: the largest id may be at most 10 x the number of distinct ids + 1000."""
    for kind, ids in (("user", [s.users for s in splits]), ("item", [s.items for s in splits])):
        distinct = len(np.unique(np.concatenate(ids)))
        limit = SPARSE_ID_FACTOR * distinct + SPARSE_ID_SLACK
        for split, values in zip(splits, ids):
            largest = int(values.max())
            if largest > limit:
                user = int(split.users[np.argmax(values)])
                raise DataError(f"{split.where(user)}: {kind} id {largest} but only {distinct:,} distinct {kind} "
                                f"ids (the largest may be at most 10 x distinct + 1000 = {limit:,}); remap the ids "
                                "to 0..n-1 with `lwbench prepare INPUT --out DIR` (docs/adding-a-dataset.md)")


def _check_range(split: RawSplit, n_users: int, n_items: int) -> None:
    for ids, limit, kind in ((split.users, n_users, "user"), (split.items, n_items, "item")):
        bad = np.flatnonzero(ids >= limit)
        if len(bad):
            user = int(split.users[bad[0]])
            raise DataError(f"{split.where(user)}: {kind} id {int(ids[bad[0]])} (user {user}) is outside the "
                            f"id range 0..{limit - 1} given by the dataset card; the card and the files disagree "
                            "(use the card's files, or load the folder by path)")


def _test_pairs_to_keep(train: RawSplit, test: RawSplit, train_m: sp.csr_matrix, cold: str,
                        overlap: str) -> dict:
    """Masks of the test pairs to keep (``pairs``: sorted distinct pairs; ``lines``: file order) and the
    numbers dropped as train/test overlap and as cold."""
    train_users = np.diff(train_m.indptr) > 0
    train_items = np.bincount(train.items, minlength=train_m.shape[1]) > 0

    def drop_mask(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        in_train = np.asarray(train_m[users, items]).ravel() > 0
        return in_train, ~train_items[items] | ~train_users[users]
    in_train, is_cold = drop_mask(test.users, test.items)
    if in_train.any() and overlap == "error":
        k = np.flatnonzero(in_train)[0]
        raise DataError(f"{test.where(int(test.users[k]))}: {int(in_train.sum()):,} test pairs are also training "
                        f"pairs (e.g. user {int(test.users[k])}, item {int(test.items[k])}); a test pair must be "
                        "unseen in training: fix the split, or pass --overlap drop to remove them from test")
    keep = ~in_train & ~(is_cold if cold == "drop" else np.zeros_like(is_cold))
    line_users, ptr, line_items = test.lines()
    line_in_train, line_cold = drop_mask(np.repeat(line_users, np.diff(ptr)), line_items)
    lines = ~line_in_train & ~(line_cold if cold == "drop" else np.zeros_like(line_cold))
    return {"pairs": keep, "lines": lines, "overlap": int(in_train.sum()),
            "cold": int((is_cold & ~in_train).sum()) if cold == "drop" else 0}


def _check_test_users(test: RawSplit, valid: sp.csr_matrix, rest: sp.csr_matrix, checks: dict,
                      from_file: bool = False) -> int:
    """Validation takes ``max(1, ceil(n/3))`` of each user's test items (§1.3), so a user with one test item
    has none left to test; returns how many users that leaves without a test item. When that is every
    test user (a leave-one-out test file), nothing is left to test: an error before training. When it is
    most of them (as in sparse public splits), a warning with the count, since test then scores a minority.
    With a validation file (``from_file``) test is kept whole: the count is of validated users without a
    test pair, and nothing is an error."""
    held = int((np.diff(valid.indptr) > 0).sum())
    without = int(((np.diff(valid.indptr) > 0) & (np.diff(rest.indptr) == 0)).sum())
    if from_file:
        return without
    what = (f"{without:,} of {held:,} test users have a single test item, which goes to validation "
            "(docs/protocol.md §1.3), leaving them no test item")
    dropped = [f"{checks[f'{k}_dropped']:,} by --{k} drop" for k in ("cold", "overlap") if checks[f"{k}_dropped"]]
    if dropped:   # the advice names only an option that would have kept pairs here
        keep = ": --cold keep keeps cold pairs" if checks["cold_dropped"] else \
            ", which are training pairs too and cannot be tested"
        what += f" (after {' and '.join(dropped)} removed test pairs{keep})"
    if rest.nnz == 0:
        raise DataError(f"{test.path}: {what}; nothing is left to test. A leave-one-out test file needs a "
                        "validation of its own: put it in valid.txt[.gz] beside the test file and run with "
                        "--valid-from file (`lwbench prepare INPUT --out DIR --valid-fraction 0.1` writes one), "
                        "or give every user at least 2 test items")
    if without * 2 > held:
        logger.warning("%s: %s; test scores the other %s users", test.path, what, f"{held - without:,}")
    return without


def _csr(users, items, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (np.asarray(users, dtype=np.int64),
                            np.asarray(items, dtype=np.int64))), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix
