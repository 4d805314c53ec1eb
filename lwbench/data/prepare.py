"""``lwbench prepare``: turn interaction data as users have it into a verified dataset folder and card.

Inputs (docs/adding-a-dataset.md):

* LightGCN text: a folder holding ``train.txt[.gz]`` and ``test.txt[.gz]`` (already split), or one such
  file (split here);
* CSV/TSV with a header naming the user, item and optional rating and timestamp columns (any id strings,
  in any encoding Python knows: ``--encoding``);
* RecBole atomic ``.inter`` files (tab-separated, ``name:type`` headers).

A second file of the same format may be given as the test split (``test=``). Ids are remapped to
0-based ids in ascending order of the original ids (numeric order when every id is an integer), so the
same pairs give the same folder whatever the input format or row order; ``user_list.tsv`` and
``item_list.tsv`` map them back (TSV with csv quoting: any id round-trips, :func:`read_id_map`). Rows are
read in chunks, so memory grows with the number of kept pairs, not with the file's text. Before pandas
parses a delimited file, one pass over its lines checks the encoding and every row's field count
(:mod:`lwbench.data.line_scan`), so a bad line is named by its line number and what is wrong with it.

The folder is written under a temporary name beside ``out``, verified by loading it with every check of
:func:`~lwbench.data.interactions.build_interactions`, then renamed, so a failed preparation leaves nothing
behind (:mod:`lwbench.data.output_folder`: the claim, the lock against a second command, the rename).
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lwbench.data.cards import CARD_FILE
from lwbench.data.interactions import COLD_MODES, OVERLAP_MODES, DataError, build_interactions, fingerprint, read_split
from lwbench.data.line_scan import QUOTE, BadLines, LineScan, scan_lines
from lwbench.data.output_folder import claimed_folder, publish
from lwbench.files import output_error

logger = logging.getLogger(__name__)

CHUNK_ROWS = 1_000_000
COLUMN_NAMES = {  # option -> names recognised in a header (case-insensitive), in order of preference
    "user": ("user_id", "user", "userid", "uid", "user_id:token"),
    "item": ("item_id", "item", "itemid", "iid", "item_id:token"),
    "rating": ("rating", "score"),
    "timestamp": ("timestamp", "time", "ts", "date"),
}
SPLITS = ("random", "temporal")
BAD_LINE_MODES = ("error", "warn", "skip")
SHOWN_BAD_LINES = 10
ID_MAP_HEADER = ["org_id", "remap_id"]


@dataclass(frozen=True)
class PrepareOptions:
    test: str | None = None            # a separate test file (same format): no split is drawn
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    time_col: str | None = None
    sep: str | None = None             # default: from the extension (.tsv/.inter: tab, else comma)
    encoding: str = "utf-8"            # of CSV/TSV/.inter text (a UTF-8 byte-order mark is skipped)
    on_bad_lines: str = "error"        # a row with a wrong field count, an empty id, a rating that is no number
    dedup: str = "first"               # which occurrence of a repeated pair is kept: "first" or "last" in time
    min_rating: float | None = None    # keep rows with rating >= min_rating (implicit feedback)
    user_core: int = 0                 # k-core: every kept user has at least this many pairs
    item_core: int = 0
    split: str = "random"
    test_fraction: float = 0.2
    valid_fraction: float | None = None  # also write valid.txt.gz (a validation file of the dataset's own)
    seed: int = 2024
    cold: str = "keep"                 # test/validation pairs of a user or item without a training pair
    overlap: str = "error"             # given test pairs that are also training pairs
    chunk_rows: int = CHUNK_ROWS


@dataclass
class Counts:
    """What reading and each filter did, printed by the command and written into the card."""

    rows_read: int = 0                 # data rows (pairs, for LightGCN text), bad lines included
    bad_lines_skipped: int = 0
    below_min_rating: int = 0
    duplicates_collapsed: int = 0
    k_core_removed: int = 0            # pairs
    overlap_dropped: int = 0           # given test pairs also in train (--overlap drop)
    cold_dropped: int = 0              # test and validation pairs of cold users or items (--cold drop)
    cold_kept: int = 0                 # the same, kept (--cold keep)


class IdCodes:
    """Original id -> provisional code, grown chunk by chunk (one pass over the file)."""

    def __init__(self) -> None:
        self.index = pd.Index([], dtype=object)

    def codes(self, values: pd.Series) -> np.ndarray:
        local, uniques = pd.factorize(values)
        pos = self.index.get_indexer(uniques)
        if (pos < 0).any():
            self.index = self.index.append(pd.Index(uniques[pos < 0], dtype=object))
            pos = self.index.get_indexer(uniques)
        return pos[local].astype(np.int64)


def prepare(source: str | Path, out: str | Path, options: PrepareOptions = PrepareOptions()) -> dict:
    """Prepare ``source`` into the new folder ``out``; returns the statistics printed by the command."""
    source, out = Path(source), Path(out)
    _check_options(options, given=bool(options.test) or source.is_dir())
    if not source.exists():
        raise DataError(f"{source}: file not found")
    with claimed_folder(out) as tmp:
        counts = Counts()
        parts, user_ids, item_ids = _read_parts(source, options, counts)
        splits, user_map, item_map = _filter_and_split(parts, user_ids, item_ids, options, counts)
        try:
            stats = _write_folder(tmp, out, splits, user_map, item_map, options, counts, parts)
        except DataError as exc:   # a check of the written folder failed: name the folder the user asked for
            raise DataError(f"{out} not written: {str(exc).replace(str(tmp), str(out))}") from None
        except OSError as exc:
            raise output_error(out, exc) from None
        publish(tmp, out)
    return stats


def _check_options(o: PrepareOptions, given: bool = False) -> None:
    """Each option on its own, and the fractions together where they are used: ``given`` (a --test file, or a
    folder holding its split) draws no test split, so --test-fraction does not take pairs from training."""
    if o.split not in SPLITS:
        raise DataError(f"--split {o.split!r}: expected one of {', '.join(SPLITS)}")
    if not 0.0 < o.test_fraction < 1.0:
        raise DataError(f"--test-fraction {o.test_fraction}: expected a fraction strictly between 0 and 1")
    if o.valid_fraction is not None:
        if not 0.0 < o.valid_fraction < 1.0:
            raise DataError(f"--valid-fraction {o.valid_fraction}: expected a fraction strictly between 0 and 1")
        if not given and o.test_fraction + o.valid_fraction >= 1.0:
            raise DataError(f"--test-fraction {o.test_fraction} + --valid-fraction {o.valid_fraction} leave no "
                            "training pairs: their sum must be below 1")
    if o.dedup not in ("first", "last"):
        raise DataError(f"--dedup {o.dedup!r}: expected first or last")
    if min(o.user_core, o.item_core) < 0:
        raise DataError("--user-core/--item-core must be >= 0")
    if o.on_bad_lines not in BAD_LINE_MODES:
        raise DataError(f"--on-bad-lines {o.on_bad_lines!r}: expected one of {', '.join(BAD_LINE_MODES)}")
    if o.cold not in COLD_MODES or o.overlap not in OVERLAP_MODES:
        raise DataError(f"--cold {o.cold!r} / --overlap {o.overlap!r}: expected --cold {'|'.join(COLD_MODES)}, "
                        f"--overlap {'|'.join(OVERLAP_MODES)}")
    try:
        codecs.lookup(o.encoding)
    except LookupError:
        raise DataError(f"--encoding {o.encoding!r}: not an encoding Python knows (e.g. utf-8, latin-1, cp1252)") \
            from None
    if o.sep is not None and not o.sep:
        raise DataError("--sep is empty: give the column separator, e.g. --sep ';'")


# --- reading ------------------------------------------------------------------------------------------

@dataclass
class Part:
    users: np.ndarray                  # provisional codes
    items: np.ndarray
    times: np.ndarray | None
    path: Path


def _read_parts(source: Path, o: PrepareOptions, counts: Counts) -> tuple[list[Part], pd.Index, pd.Index]:
    """The input's part(s) (train, then the given test), and the original ids of the codes (shared)."""
    users, items = IdCodes(), IdCodes()
    if source.is_dir():
        if o.test:
            raise DataError(f"{source}: a folder already holds its test split; drop --test")
        files = [_lightgcn_file(source, s) for s in ("train", "test")]
    else:
        files = [source] + ([Path(o.test)] if o.test else [])
    parts = [_read_file(path, o, users, items, counts) for path in files]
    return parts, users.index, items.index


def _lightgcn_file(folder: Path, split: str) -> Path:
    for name in (f"{split}.txt.gz", f"{split}.txt"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {split}.txt or {split}.txt.gz in this folder")


def _plain_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    return name


def _is_lightgcn(path: Path) -> bool:
    return _plain_name(path).endswith(".txt")


def _read_file(path: Path, o: PrepareOptions, users: IdCodes, items: IdCodes, counts: Counts) -> Part:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot read this file (permission denied)")
    if _is_lightgcn(path):
        raw = read_split(path)
        line_users, ptr, line_items = raw.lines()
        all_users = np.repeat(line_users, np.diff(ptr))       # every pair as read: duplicates are counted
        counts.rows_read += len(line_items)
        return Part(users.codes(pd.Series(all_users)), items.codes(pd.Series(line_items)), None, path)
    return _read_delimited(path, o, users, items, counts)


def _separator(path: Path, o: PrepareOptions) -> str:
    if o.sep is not None:
        return "\t" if o.sep in ("\\t", "tab", "TAB") else o.sep
    return "\t" if _plain_name(path).endswith((".tsv", ".inter")) else ","


def _pandas_encoding(encoding: str) -> str:
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _read_delimited(path: Path, o: PrepareOptions, users: IdCodes, items: IdCodes, counts: Counts) -> Part:
    sep = _separator(path, o)
    scan = scan_lines(path, sep, o.encoding)
    encoding = _pandas_encoding(o.encoding)
    try:
        header = pd.read_csv(path, sep=sep, nrows=0, encoding=encoding).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as exc:
        raise DataError(f"{path}: cannot parse the header line as {'TSV' if sep == chr(9) else 'CSV'} ({exc}); "
                        "check --sep and the quoting") from None
    names = {str(c): str(c).split(":")[0].strip().lower() for c in header}   # RecBole: "user_id:token"
    cols = {key: _column(path, header, names, key, getattr(o, f"{key if key != 'timestamp' else 'time'}_col"))
            for key in COLUMN_NAMES}
    for key, needed in (("rating", o.min_rating is not None), ("timestamp", o.split == "temporal" and not o.test)):
        if needed and cols[key] is None:
            raise DataError(f"{path}: no {key} column (header: {', '.join(map(str, header))}); "
                            f"name it with --{key if key != 'timestamp' else 'time'}-col")
    if not scan.n_records:
        raise DataError(f"{path}: no rows after the header")
    bad = BadLines(path, f"{len(header)} ({', '.join(map(str, header))})")
    wanted = [c for c in cols.values() if c is not None]
    u, i, t, row = [], [], [], 0
    reader = pd.read_csv(path, sep=sep, usecols=wanted, dtype={c: str for c in wanted}, chunksize=o.chunk_rows,
                         encoding=encoding, keep_default_na=False, na_values=[""])
    try:
        for chunk in reader:
            keep, ratings, times = _check_chunk(chunk, cols, o, scan, row, bad)
            row += len(chunk)
            if o.min_rating is not None:
                below = keep & (ratings < o.min_rating)
                counts.below_min_rating += int(below.sum())
                keep &= ~below
            u.append(users.codes(chunk[cols["user"]][keep]))
            i.append(items.codes(chunk[cols["item"]][keep]))
            if times is not None:
                t.append(times[keep])
    except (pd.errors.ParserError, UnicodeError) as exc:
        raise DataError(f"{path}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'} ({exc}); "
                        "check --sep and the quoting") from None
    if row != scan.n_records:
        raise DataError(f"{path}: pandas read {row:,} rows but the file has {scan.n_records:,}; check --sep and the "
                        "quoting")
    counts.rows_read += row
    if bad.count:
        if o.on_bad_lines == "error":
            raise DataError(bad.message("error"))
        if o.on_bad_lines == "warn":
            logger.warning("%s", bad.message("warn"))
        counts.bad_lines_skipped += bad.count
    return Part(np.concatenate(u), np.concatenate(i), np.concatenate(t) if t else None, path)


def _check_chunk(chunk: pd.DataFrame, cols: dict, o: PrepareOptions, scan: LineScan, first: int,
                 bad: BadLines) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(rows to keep, ratings, timestamps) of one chunk; its bad rows are noted in ``bad``: a wrong field
    count (from the line scan), an empty user or item id, a rating or timestamp that is not a number."""
    n = len(chunk)
    field_pos, field_counts = scan.field_errors(first, first + n)
    problems = []   # (mask, describe(row position) -> words), in the order they are reported

    for key in ("user", "item"):
        column = cols[key]
        problems.append((chunk[column].isna().to_numpy(),
                         lambda k, column=column, key=key: f"no {key} id (column {column!r} is empty)"))
    ratings = times = None
    numeric = [("rating", o.min_rating is not None), ("timestamp", cols["timestamp"] is not None)]
    for key, used in numeric:
        if not used:
            continue
        column = cols[key]
        values = pd.to_numeric(chunk[column], errors="coerce").to_numpy(dtype=np.float64)
        hint = " (timestamps must be numbers, e.g. Unix seconds)" if key == "timestamp" else ""

        def describe(k, column=column, hint=hint):
            value = chunk[column].iloc[k]
            return (f"column {column!r} is empty" if pd.isna(value) else
                    f"column {column!r} holds {value!r}, not a number{hint}")
        problems.append((np.isnan(values), describe))
        if key == "rating":
            ratings = values
        else:
            times = values
    is_bad = np.zeros(n, dtype=bool)
    is_bad[field_pos] = True
    for mask, _ in problems:
        is_bad |= mask
    if is_bad.any():
        positions = np.flatnonzero(is_bad)
        fields_of = dict(zip(field_pos.tolist(), field_counts.tolist()))
        for k in positions[: max(0, SHOWN_BAD_LINES - len(bad.shown))].tolist():
            if k in fields_of:
                words = f"{fields_of[k]} field{'s' if fields_of[k] != 1 else ''}, expected {bad.expected}"
            else:
                words = next(describe(k) for mask, describe in problems if mask[k])
            bad.shown.append(f"line {scan.line_of(first + k)}: {words}")
        bad.count += len(positions)
    return ~is_bad, ratings, times


def _column(path: Path, header, names: dict, key: str, given: str | None) -> str | None:
    if given is not None:
        if given not in header:
            raise DataError(f"{path}: no column {given!r} (header: {', '.join(map(str, header))}); "
                            f"fix --{key if key != 'timestamp' else 'time'}-col")
        return given
    for wanted in COLUMN_NAMES[key]:
        for column, plain in names.items():
            if plain == wanted.split(":")[0]:
                return column
    if key in ("user", "item"):
        raise DataError(f"{path}: no {key} column (header: {', '.join(map(str, header))}; recognised names: "
                        f"{', '.join(COLUMN_NAMES[key][:4])}); name it with --{key}-col")
    return None


# --- filtering, remapping, splitting ------------------------------------------------------------------

TRAIN, TEST, VALID, DROPPED = 0, 1, 2, -1


def _filter_and_split(parts: list[Part], user_ids: pd.Index, item_ids: pd.Index, o: PrepareOptions,
                      counts: Counts) -> tuple[dict, pd.Index, pd.Index]:
    """Deduplicate, k-core filter, remap to 0-based ids and split (or keep the given split), draw validation
    (``valid_fraction``) and handle cold pairs; returns ({"train"|"test"|"valid": (users, items)}, original
    user ids, original item ids) with the original ids by new id."""
    label = parts[0].path
    given = len(parts) == 2
    sizes = [len(p.users) for p in parts]
    users = np.concatenate([p.users for p in parts])
    items = np.concatenate([p.items for p in parts])
    times = (np.concatenate([p.times for p in parts]) if all(p.times is not None for p in parts) else None)
    part = np.repeat(np.arange(len(parts)), sizes)
    if o.split == "temporal" and times is None and (not given or o.valid_fraction is not None):
        raise DataError(_untimed(parts, given))
    rows = len(users)
    if not rows:
        raise DataError(f"{label}: nothing left after filtering ({counts.rows_read:,} rows read, "
                        f"{counts.bad_lines_skipped:,} bad lines left out, {counts.below_min_rating:,} rated below "
                        "--min-rating); lower --min-rating or fix the bad lines")
    # one pair per (part, user, item): the first (or last) in time, else in file order
    when = times if times is not None else np.arange(rows, dtype=np.float64)
    order = np.lexsort((when if o.dedup == "first" else -when, items, users, part))
    users, items, part, when = users[order], items[order], part[order], when[order]
    first = np.ones(len(users), dtype=bool)
    first[1:] = (np.diff(part) != 0) | (np.diff(users) != 0) | (np.diff(items) != 0)
    users, items, part, when = users[first], items[first], part[first], when[first]
    counts.duplicates_collapsed = rows - len(users)
    if given:
        keep = _given_overlap(users, items, part, user_ids, item_ids, parts[1].path, o, counts)
        users, items, part, when = users[keep], items[keep], part[keep], when[keep]
    keep = _k_core(users, items, o.user_core, o.item_core)
    counts.k_core_removed = int((~keep).sum())
    if not keep.any():
        raise DataError(f"{label}: nothing left after filtering ({rows:,} rows read, {len(users):,} distinct "
                        f"pairs, 0 after the {o.user_core}/{o.item_core} user/item k-core); lower --user-core/"
                        "--item-core or --min-rating")
    users, items, part, when = users[keep], items[keep], part[keep], when[keep]
    users, user_map = _remap(users, user_ids)
    items, item_map = _remap(items, item_ids)
    by_time = o.split == "temporal" and times is not None
    role = np.where(part == 1, TEST, TRAIN) if given else np.where(
        _split(users, items, when if by_time else None, o), TEST, TRAIN)
    if not (role == TEST).any() or (role == TEST).all():
        raise DataError(f"{label}: the {'given' if given else o.split} split leaves "
                        f"{'no test' if not (role == TEST).any() else 'no training'} pairs; check --test-fraction "
                        "and the filters")
    if o.valid_fraction is not None:
        role[_draw_valid(users, items, when, role, by_time, given, o)] = VALID
    _cold(users, items, role, o, counts, label)
    if o.valid_fraction is None:
        _check_testable(users, role, o, given, label, counts)
    splits = {name: (users[role == r], items[role == r]) for name, r in (("train", TRAIN), ("test", TEST))}
    if o.valid_fraction is not None:
        if not (role == VALID).any():
            raise DataError(f"{label}: --valid-fraction {o.valid_fraction} draws no validation pair (a user needs "
                            "at least 2 pairs left after its test pairs); raise --valid-fraction or filter with "
                            "--user-core")
        splits["valid"] = (users[role == VALID], items[role == VALID])
    return splits, user_map, item_map


def _untimed(parts: list[Part], given: bool) -> str:
    """Why ``--split temporal`` cannot be drawn: a part without timestamps (LightGCN text has none)."""
    part = next(p for p in parts if p.times is None)
    why = ("LightGCN text has no timestamps" if _is_lightgcn(part.path) else
           "it has no timestamp column (name one with --time-col)")
    what = "the validation pairs (--valid-fraction)" if given else "the test pairs"
    return (f"{part.path}: --split temporal takes each user's latest pairs by time as {what}, but {why}; use "
            "--split random (--seed), or prepare from a CSV/TSV or RecBole .inter file with a timestamp column")


def _given_overlap(users, items, part, user_ids, item_ids, test_path: Path, o: PrepareOptions,
                   counts: Counts) -> np.ndarray:
    """Mask of the pairs to keep: a given test pair that is also a training pair is an error, or with
    ``overlap="drop"`` it leaves test (counted)."""
    width = int(items.max()) + 1
    keys = users * width + items
    in_train = (part == 1) & np.isin(keys, keys[part == 0])
    if not in_train.any():
        return np.ones(len(users), dtype=bool)
    if o.overlap == "error":
        k = int(np.flatnonzero(in_train)[0])
        raise DataError(f"{test_path}: {int(in_train.sum()):,} test pairs are also training pairs (e.g. user "
                        f"{str(user_ids[users[k]])!r}, item {str(item_ids[items[k]])!r}); a test pair must be unseen in "
                        "training: fix the split, or pass --overlap drop to remove them from test")
    counts.overlap_dropped = int(in_train.sum())
    return ~in_train


def _k_core(users: np.ndarray, items: np.ndarray, user_core: int, item_core: int) -> np.ndarray:
    """Mask of the pairs of the largest subgraph whose users have >= user_core and items >= item_core pairs."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        user_deg = np.bincount(users[keep], minlength=users.max() + 1 if len(users) else 0)
        item_deg = np.bincount(items[keep], minlength=items.max() + 1 if len(items) else 0)
        ok = keep & (user_deg[users] >= user_core) & (item_deg[items] >= item_core)
        if (ok == keep).all():
            return keep
        keep = ok


def _remap(codes: np.ndarray, originals: pd.Index) -> tuple[np.ndarray, pd.Index]:
    """Kept codes -> 0-based ids ranked by original id (numerically when every id is an integer)."""
    used = np.unique(codes)
    kept = originals[used]
    as_int = pd.to_numeric(pd.Series(kept.astype(str)), errors="coerce")
    if as_int.notna().all() and (as_int % 1 == 0).all():
        rank = np.lexsort((kept.astype(str).to_numpy(), as_int.to_numpy()))
    else:
        rank = np.argsort(kept.astype(str).to_numpy(), kind="stable")
    new_of_used = np.empty(len(used), dtype=np.int64)
    new_of_used[rank] = np.arange(len(used))
    return new_of_used[np.searchsorted(used, codes)], kept[rank]


def _latest(users: np.ndarray, items: np.ndarray, key: np.ndarray, by_time: bool, n_take: np.ndarray,
            candidates: np.ndarray | None = None) -> np.ndarray:
    """Mask of each user's ``n_take[user]`` candidate pairs with the largest ``key`` (a random key, or the
    time with ties broken by the larger item id)."""
    idx = np.arange(len(users)) if candidates is None else np.flatnonzero(candidates)
    u, it, k = users[idx], items[idx], key[idx]
    order = np.lexsort((it, k, u)) if by_time else np.lexsort((k, u))
    counts = np.bincount(u, minlength=len(n_take))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_from_end = np.repeat(starts + counts, counts) - 1 - np.arange(len(u))   # 0 for the last of a user
    chosen = np.empty(len(u), dtype=bool)
    chosen[order] = rank_from_end < np.repeat(n_take, counts)
    mask = np.zeros(len(users), dtype=bool)
    mask[idx] = chosen
    return mask


def test_pair_counts(n: np.ndarray, fraction: float) -> np.ndarray:
    """Test pairs of a user with ``n`` pairs: ``round(n * fraction)``, at least 1 and at most n-1 (none for
    a user with one pair)."""
    return np.clip(np.round(n * fraction), 1, np.maximum(n - 1, 0)).astype(np.int64)


def _split(users: np.ndarray, items: np.ndarray, times: np.ndarray | None, o: PrepareOptions) -> np.ndarray:
    """Per user, ``round(n * test_fraction)`` pairs (at least 1 and at most n-1; none for a user with one
    pair) go to test: a random choice (``seed``), or the latest by time (ties: the larger item id)."""
    key = np.random.default_rng(o.seed).random(len(users)) if times is None else times
    return _latest(users, items, key, times is not None, test_pair_counts(np.bincount(users), o.test_fraction))


def _draw_valid(users, items, when, role, by_time: bool, given: bool, o: PrepareOptions) -> np.ndarray:
    """Mask of the validation pairs, drawn from the training pairs: per user ``round(n * valid_fraction)``
    (at least 1, leaving at least one training pair; none when fewer than 2 training pairs are left), where
    ``n`` is all the user's pairs for a split drawn here and its training pairs for a given split; the latest
    ones before test with ``--split temporal``, else at random (``seed``)."""
    n_users = int(users.max()) + 1
    train = np.bincount(users[role == TRAIN], minlength=n_users)
    base = train if given else np.bincount(users, minlength=n_users)
    n_valid = np.where(train >= 2, np.clip(np.round(base * o.valid_fraction), 1, np.maximum(train - 1, 1)), 0)
    key = when if by_time else np.random.default_rng([o.seed, 1]).random(len(users))
    return _latest(users, items, key, by_time, n_valid.astype(np.int64), candidates=role == TRAIN)


def _cold(users, items, role, o: PrepareOptions, counts: Counts, label: Path) -> None:
    """Test and validation pairs whose user or item has no training pair: counted, and with ``cold="drop"``
    marked dropped (an error when that empties test, saying so)."""
    train = role == TRAIN
    has_user = np.zeros(int(users.max()) + 1, dtype=bool)
    has_user[users[train]] = True
    has_item = np.zeros(int(items.max()) + 1, dtype=bool)
    has_item[items[train]] = True
    cold = (role != TRAIN) & (~has_user[users] | ~has_item[items])
    if o.cold == "keep":
        counts.cold_kept = int(cold.sum())
        return
    n_test = int((role == TEST).sum())
    counts.cold_dropped = int(cold.sum())
    role[cold] = DROPPED
    if not (role == TEST).any():
        raise DataError(f"{label}: all {n_test:,} test pairs were dropped as cold (--cold drop: their user or item "
                        "has no training pair); nothing is left to test. Keep them with --cold keep (the default), "
                        "or give items training pairs (a smaller --test-fraction, --item-core 2)")


def _check_testable(users, role, o: PrepareOptions, given: bool, label: Path, counts: Counts) -> None:
    """Validation takes ``max(1, ceil(n/3))`` of each user's test pairs (docs/protocol.md §1.3): when no user
    has two test pairs, nothing is left to test. An error with advice computed from the data."""
    n_users = int(users.max()) + 1
    tests = np.bincount(users[role == TEST], minlength=n_users)
    if tests.max() >= 2:
        return
    what = (f"{label}: every test user has a single test pair, which validation would take (docs/protocol.md "
            "§1.3), leaving nothing to test")
    if counts.cold_dropped:
        what += f" (after --cold drop removed {counts.cold_dropped:,} pairs)"
    if given:
        raise DataError(f"{what}. Add --valid-fraction 0.1 to write a validation file drawn from each user's "
                        "training pairs (valid.txt.gz) and train with --valid-from file, or give users at least "
                        "2 test pairs")
    n = np.bincount(users[role != DROPPED], minlength=n_users)
    n = n[n > 0]
    fraction = advised_test_fraction(n)
    advice = []
    if fraction is not None:
        few = int((n < 3).sum())
        advice.append(f"--test-fraction {fraction:g} (users have {int(np.median(n))} pairs at the median; it is the "
                      "smallest fraction that gives every user with 3 or more pairs two test pairs and a training "
                      "pair" + (f"; {few:,} users with fewer pairs stay untested, --user-core 3 removes them)" if few
                                 else ")"))
    advice.append(f"keep --test-fraction {o.test_fraction:g} and add --valid-fraction {o.test_fraction:g} to write a "
                  "validation file (valid.txt.gz), then train with --valid-from file")
    if fraction is None:
        what += "; no user has 3 or more pairs (a training, a validation and a test pair)"
    raise DataError(f"{what}. Run again with " + ", or ".join(advice))


def advised_test_fraction(n: np.ndarray) -> float | None:
    """The smallest ``--test-fraction`` (in hundredths) that gives every user with ``n >= 3`` pairs at least two
    test pairs and a training pair, so that validation leaves each a test pair; None when no user has 3."""
    big = n[n >= 3]
    if not len(big):
        return None
    for hundredths in range(max(1, math.ceil(150 / int(big.min())) - 1), 100):
        fraction = hundredths / 100
        if (test_pair_counts(big, fraction) >= 2).all():
            return fraction
    return None


# --- writing ------------------------------------------------------------------------------------------

def _write_folder(folder: Path, out: Path, splits: dict, user_map: pd.Index, item_map: pd.Index,
                  o: PrepareOptions, counts: Counts, parts: list[Part]) -> dict:
    paths = {}
    for split, (users, items) in splits.items():
        paths[split] = folder / f"{split}.txt.gz"
        _write_lightgcn(paths[split], users, items)
    for kind, ids in (("user", user_map), ("item", item_map)):
        path = folder / f"{kind}_list.tsv"
        write_id_map(path, ids.astype(str).tolist())
        if read_id_map(path) != ids.astype(str).tolist():   # never write a map that does not read back
            raise DataError(f"{path}: the id map does not read back as written")
    # every loader check, before renaming; messages name the files as they will be named
    raws = {s: dataclasses.replace(read_split(p), path=str(out / p.name)) for s, p in paths.items()}
    inter = build_interactions(out.name, raws["train"], raws["test"], valid=raws.get("valid"))
    stats = inter.stats()
    card = {"name": out.name, "n_users": inter.n_users, "n_items": inter.n_items,
            **{f"{s}_interactions": r.n_pairs for s, r in raws.items()}}
    prints = {s: fingerprint(r.users, r.items) for s, r in raws.items()}
    sources = [("source", parts[0].path)] + ([("test_source", parts[1].path)] if len(parts) > 1 else [])
    prepared = {**{k: str(p) for k, p in sources}, **{f"{k}_sha256": file_sha256(p) for k, p in sources}}
    options = {k: v for k, v in dataclasses.asdict(o).items() if v is not None and k != "chunk_rows"}
    lines = ["# Dataset card written by `lwbench prepare` (docs/adding-a-dataset.md)"]
    lines += [f"{k} = {toml_value(v)}" for k, v in card.items()]
    lines += ["", "[fingerprints]"] + [f"{s}_sha256 = {toml_value(h)}" for s, h in prints.items()]
    lines += ["", "# How this folder was made (for people; loading checks only the counts and fingerprints above)",
              "[prepared]"] + [f"{k} = {toml_value(v)}" for k, v in prepared.items()]
    lines += ["", "[prepared.options]"] + [f"{k} = {toml_value(v)}" for k, v in options.items()]
    lines += ["", "[prepared.counts]"] + [f"{k} = {v}" for k, v in dataclasses.asdict(counts).items()]
    (folder / CARD_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    n_pairs = sum(r.n_pairs for r in raws.values())
    return {**card, "density": n_pairs / (inter.n_users * inter.n_items), "cold_items": stats.cold_items,
            "cold_users": stats.cold_users, **{f"{s}_sha256": h for s, h in prints.items()},
            "counts": dataclasses.asdict(counts), "valid_file": "valid" in raws}


def _write_lightgcn(path: Path, users: np.ndarray, items: np.ndarray) -> None:
    """One line per user, ascending users and items, gzip with no name and mtime 0 (byte-reproducible)."""
    order = np.lexsort((items, users))
    users, items = users[order], items[order]
    bounds = np.flatnonzero(np.diff(users)) + 1
    lines = (f"{u} " + " ".join(map(str, its.tolist()))
             for u, its in zip(users[np.concatenate([[0], bounds])].tolist(), np.split(items, bounds)))
    data = ("\n".join(lines) + "\n").encode("ascii")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9,
                                                 mtime=0) as handle:
        handle.write(data)


def write_id_map(path: Path, ids: list[str]) -> None:
    """``org_id<TAB>remap_id`` lines under that header, UTF-8, CSV-quoted: an id holding a tab, a line break
    (``\\n`` or ``\\r``) or a double quote is written in double quotes with its quotes doubled, so any id
    reads back (:func:`read_id_map`, or Python's ``csv`` module with ``delimiter="\\t"``)."""
    def field(text: str) -> str:
        return f'"{text.replace(QUOTE, QUOTE * 2)}"' if any(ch in text for ch in '\t\n\r"') else text
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("\t".join(ID_MAP_HEADER) + "\n")
        handle.writelines(f"{field(org)}\t{new}\n" for new, org in enumerate(ids))


def read_id_map(path: str | Path) -> list[str]:
    """The original ids of an id map written by ``prepare`` (``user_list.tsv`` / ``item_list.tsv``), by new
    id: ``read_id_map(folder / "item_list.tsv")[7]`` is the original id of item 7."""
    path = Path(path)
    ids = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quotechar=QUOTE, strict=True)
        for row in reader:
            if reader.line_num == 1 and not ids and row == ID_MAP_HEADER:
                continue
            if len(row) != 2 or row[1] != str(len(ids)):
                raise DataError(f"{path}:{reader.line_num}: expected 'org_id<TAB>{len(ids)}', got {row!r}")
            ids.append(row[0])
    return ids


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def toml_value(value) -> str:
    """A TOML literal for a string, number or boolean (strings as basic strings, every control character
    escaped; a lone surrogate, as in an undecodable file name, becomes U+FFFD)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value):
            return repr(float(value))
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    text = []
    for ch in str(value):
        code = ord(ch)
        if ch in '"\\':
            text.append("\\" + ch)
        elif ch in "\n\t\r":
            text.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif code < 0x20 or code == 0x7F:
            text.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            text.append("\ufffd")
        else:
            text.append(ch)
    return '"' + "".join(text) + '"'


# --- the command --------------------------------------------------------------------------------------

def command(args) -> int:
    """``lwbench prepare``: build the options from the parsed arguments, prepare, print what happened."""
    options = PrepareOptions(
        test=args.test, user_col=args.user_col, item_col=args.item_col, rating_col=args.rating_col,
        time_col=args.time_col, sep=args.sep, encoding=args.encoding, on_bad_lines=args.on_bad_lines,
        dedup=args.dedup, min_rating=args.min_rating, user_core=args.user_core, item_core=args.item_core,
        split=args.split, test_fraction=args.test_fraction, valid_fraction=args.valid_fraction, seed=args.seed,
        cold=args.cold, overlap=args.overlap)
    stats = prepare(args.input, args.out, options)
    print(summary(stats, args.out, options))
    return 0


def summary(stats: dict, out, o: PrepareOptions) -> str:
    c = stats["counts"]
    valid = f" / {stats['valid_interactions']:,} validation" if stats["valid_file"] else ""
    rating = (f"{c['below_min_rating']:,} rows rated below {o.min_rating:g} (--min-rating)"
              if o.min_rating is not None else "no rating threshold")
    core = (f"{c['k_core_removed']:,} pairs by the {o.user_core}/{o.item_core} user/item k-core"
            if o.user_core or o.item_core else "no k-core")
    cold = (f"{c['cold_dropped']:,} cold test/validation pairs (--cold drop)" if o.cold == "drop" else
            f"0 cold pairs ({c['cold_kept']:,} kept, --cold keep)")
    overlap = (f"{c['overlap_dropped']:,} test pairs also in train (--overlap drop)" if o.overlap == "drop"
               else "0 overlapping pairs")
    skipped = f" ({c['bad_lines_skipped']:,} bad lines left out)" if c["bad_lines_skipped"] else ""
    prints = ", ".join(f"{s} {stats[f'{s}_sha256']}" for s in ("train", "test", "valid") if f"{s}_sha256" in stats)
    return (f"{out}: {stats['n_users']:,} users, {stats['n_items']:,} items, {stats['train_interactions']:,} train / "
            f"{stats['test_interactions']:,} test{valid} pairs, density {stats['density']:.6f}, "
            f"{stats['cold_items']:,} cold items, {stats['cold_users']:,} cold users\n"
            f"read {c['rows_read']:,} rows{skipped}; {c['duplicates_collapsed']:,} duplicate pairs collapsed; "
            f"filters removed {rating}, {core}, {cold}, {overlap}\n"
            f"fingerprints: {prints}\n"
            f"run it with: --dataset {out}" + (" --valid-from file" if stats["valid_file"] else ""))
