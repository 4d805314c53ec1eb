"""``lwbench prepare``: turn interaction data as users have it into a verified dataset folder and card.

Inputs (docs/adding-a-dataset.md):

* LightGCN text: a folder holding ``train.txt[.gz]`` and ``test.txt[.gz]`` (already split), or one such
  file (split here);
* CSV/TSV with a header naming the user, item and optional rating and timestamp columns (any id strings);
* RecBole atomic ``.inter`` files (tab-separated, ``name:type`` headers).

A second file of the same format may be given as the test split (``test=``). Ids are remapped to
0-based ids in ascending order of the original ids (numeric order when every id is an integer), so the
same pairs give the same folder whatever the input format or row order; ``user_list.txt`` and
``item_list.txt`` map them back. Rows are read in chunks, so memory grows with the number of kept pairs,
not with the file's text. The folder is written under a temporary name, verified by loading it with
every check of :func:`~lwbench.data.interactions.build_interactions`, then renamed: a failed preparation
leaves nothing behind.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lwbench.data.cards import CARD_FILE
from lwbench.data.interactions import DataError, build_interactions, fingerprint, read_split

logger = logging.getLogger(__name__)

CHUNK_ROWS = 1_000_000
COLUMN_NAMES = {  # option -> names recognised in a header (case-insensitive), in order of preference
    "user": ("user_id", "user", "userid", "uid", "user_id:token"),
    "item": ("item_id", "item", "itemid", "iid", "item_id:token"),
    "rating": ("rating", "score"),
    "timestamp": ("timestamp", "time", "ts", "date"),
}
SPLITS = ("random", "temporal")


@dataclass(frozen=True)
class PrepareOptions:
    test: str | None = None            # a separate test file (same format): no split is drawn
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    time_col: str | None = None
    sep: str | None = None             # default: from the extension (.tsv/.inter: tab, else comma)
    dedup: str = "first"               # which occurrence of a repeated pair is kept: "first" or "last" in time
    min_rating: float | None = None    # keep rows with rating >= min_rating (implicit feedback)
    user_core: int = 0                 # k-core: every kept user has at least this many pairs
    item_core: int = 0
    split: str = "random"
    test_fraction: float = 0.2
    seed: int = 2024
    chunk_rows: int = CHUNK_ROWS


@dataclass
class Table:
    """Rows as provisional codes into ``user_ids``/``item_ids`` (first-seen order), with optional time."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray | None
    user_ids: pd.Index
    item_ids: pd.Index
    rows_read: int


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
    if out.exists():
        raise DataError(f"{out}: already exists; prepare writes a new folder (choose another --out or remove it)")
    _check_options(options)
    parts, user_ids, item_ids = _read_parts(source, options)
    train, test, user_map, item_map = _filter_and_split(parts, user_ids, item_ids, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        stats = _write_folder(tmp, out.name, train, test, user_map, item_map)
        os.replace(tmp, out)
    except DataError as exc:   # a check of the written folder failed: name the folder the user asked for
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{out} not written: {str(exc).replace(str(tmp), str(out))}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats


def _check_options(o: PrepareOptions) -> None:
    if o.split not in SPLITS:
        raise DataError(f"--split {o.split!r}: expected one of {', '.join(SPLITS)}")
    if not 0.0 < o.test_fraction < 1.0:
        raise DataError(f"--test-fraction {o.test_fraction}: expected a fraction strictly between 0 and 1")
    if o.dedup not in ("first", "last"):
        raise DataError(f"--dedup {o.dedup!r}: expected first or last")
    if min(o.user_core, o.item_core) < 0:
        raise DataError("--user-core/--item-core must be >= 0")


# --- reading ------------------------------------------------------------------------------------------

def _read_parts(source: Path, o: PrepareOptions) -> tuple[list, pd.Index, pd.Index]:
    """The input's part(s) as (user codes, item codes, times or None, file name), and the original ids of
    the codes (shared by the parts)."""
    users, items = IdCodes(), IdCodes()
    if source.is_dir():
        if o.test:
            raise DataError(f"{source}: a folder already holds its test split; drop --test")
        files = [_lightgcn_file(source, s) for s in ("train", "test")]
    else:
        files = [source] + ([Path(o.test)] if o.test else [])
    parts = [_read_file(path, o, users, items) for path in files]
    return parts, users.index, items.index


def _lightgcn_file(folder: Path, split: str) -> Path:
    for name in (f"{split}.txt.gz", f"{split}.txt"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {split}.txt or {split}.txt.gz in this folder")


def _is_lightgcn(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith(".txt")


def _read_file(path: Path, o: PrepareOptions, users: IdCodes, items: IdCodes):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if _is_lightgcn(path):
        raw = read_split(path)
        return users.codes(pd.Series(raw.users)), items.codes(pd.Series(raw.items)), None, str(path)
    sep = o.sep or ("\t" if path.name.removesuffix(".gz").endswith((".tsv", ".inter")) else ",")
    header = pd.read_csv(path, sep=sep, nrows=0, encoding="utf-8-sig").columns
    names = {str(c): str(c).split(":")[0].strip().lower() for c in header}   # RecBole: "user_id:token"
    cols = {key: _column(path, header, names, key, getattr(o, f"{key if key != 'timestamp' else 'time'}_col"))
            for key in COLUMN_NAMES}
    for key, needed in (("rating", o.min_rating is not None), ("timestamp", o.split == "temporal" and not o.test)):
        if needed and cols[key] is None:
            raise DataError(f"{path}: no {key} column (header: {', '.join(map(str, header))}); "
                            f"name it with --{key if key != 'timestamp' else 'time'}-col")
    wanted = [c for c in cols.values() if c is not None]
    u, i, t, rows = [], [], [], 0
    reader = pd.read_csv(path, sep=sep, usecols=wanted, dtype={c: str for c in wanted}, chunksize=o.chunk_rows,
                         encoding="utf-8-sig", keep_default_na=False, na_values=[""])
    try:
        for chunk in reader:
            first_row = rows + 2          # file line of the chunk's first row (line 1 is the header)
            rows += len(chunk)
            for key in ("user", "item"):
                _no_missing(path, chunk, cols[key], first_row)
            keep = np.ones(len(chunk), dtype=bool)
            if o.min_rating is not None:
                keep = _numbers(path, chunk, cols["rating"], first_row) >= o.min_rating
            u.append(users.codes(chunk[cols["user"]][keep]))
            i.append(items.codes(chunk[cols["item"]][keep]))
            if cols["timestamp"] is not None:
                t.append(_numbers(path, chunk, cols["timestamp"], first_row)[keep])
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'} ({exc}); "
                        "check --sep and the quoting") from None
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return (np.concatenate(u), np.concatenate(i), np.concatenate(t) if t else None, str(path))


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


def _no_missing(path: Path, chunk: pd.DataFrame, column: str, first_row: int) -> None:
    missing = chunk[column].isna().to_numpy()
    if missing.any():
        line = first_row + int(np.flatnonzero(missing)[0])
        raise DataError(f"{path}:{line}: column {column!r} is empty; every row needs a user and an item id")


def _numbers(path: Path, chunk: pd.DataFrame, column: str, first_row: int) -> np.ndarray:
    values = pd.to_numeric(chunk[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}:{first_row + k}: column {column!r} holds {chunk[column].iloc[k]!r}, not a number "
                        "(timestamps must be numbers, e.g. Unix seconds)")
    return values


# --- filtering, remapping, splitting ------------------------------------------------------------------

def _filter_and_split(parts: list, user_ids: pd.Index, item_ids: pd.Index, o: PrepareOptions):
    """Deduplicate, k-core filter, remap to 0-based ids and split (or keep the given split); returns
    (train pairs, test pairs, original user ids, original item ids) with the original ids by new id."""
    sizes = [len(p[0]) for p in parts]
    users = np.concatenate([p[0] for p in parts])
    items = np.concatenate([p[1] for p in parts])
    times = (np.concatenate([p[2] for p in parts]) if all(p[2] is not None for p in parts) else None)
    part = np.repeat(np.arange(len(parts)), sizes)
    rows = len(users)
    # one pair per (part, user, item): the first (or last) in time, else in file order
    when = times if times is not None else np.arange(rows, dtype=np.float64)
    order = np.lexsort((when if o.dedup == "first" else -when, items, users, part))
    users, items, part, when = users[order], items[order], part[order], when[order]
    first = np.ones(len(users), dtype=bool)
    first[1:] = (np.diff(part) != 0) | (np.diff(users) != 0) | (np.diff(items) != 0)
    users, items, part, when = users[first], items[first], part[first], when[first]
    keep = _k_core(users, items, o.user_core, o.item_core)
    if not keep.any():
        raise DataError(f"{parts[0][3]}: nothing left after filtering ({rows:,} rows read, {len(users):,} distinct "
                        f"pairs, 0 after the {o.user_core}/{o.item_core} user/item k-core); lower --user-core/"
                        "--item-core or --min-rating")
    users, items, part, when = users[keep], items[keep], part[keep], when[keep]
    users, user_map = _remap(users, user_ids)
    items, item_map = _remap(items, item_ids)
    if len(parts) == 2:
        is_test = part == 1
    else:
        is_test = _split(users, items, when if (o.split == "temporal") else None, o)
    if not is_test.any() or is_test.all():
        raise DataError(f"{parts[0][3]}: the {'given' if len(parts) == 2 else o.split} split leaves "
                        f"{'no test' if not is_test.any() else 'no training'} pairs; check --test-fraction "
                        "and the filters")
    return (users[~is_test], items[~is_test]), (users[is_test], items[is_test]), user_map, item_map


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


def _split(users: np.ndarray, items: np.ndarray, times: np.ndarray | None, o: PrepareOptions) -> np.ndarray:
    """Per user, ``round(n * test_fraction)`` pairs (at least 1 and at most n-1; none for a user with one
    pair) go to test: a random choice (``seed``), or the latest by time (ties: the larger item id)."""
    key = np.random.default_rng(o.seed).random(len(users)) if times is None else times
    order = np.lexsort((items, key, users)) if times is not None else np.lexsort((key, users))
    counts = np.bincount(users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank_from_end = np.repeat(starts + counts, counts) - 1 - np.arange(len(users))   # 0 for the last of a user
    n_test = np.clip(np.round(counts * o.test_fraction), 1, np.maximum(counts - 1, 0)).astype(np.int64)
    is_test = np.empty(len(users), dtype=bool)
    is_test[order] = rank_from_end < np.repeat(n_test, counts)
    return is_test


# --- writing ------------------------------------------------------------------------------------------

def _write_folder(folder: Path, name: str, train, test, user_map: pd.Index, item_map: pd.Index) -> dict:
    paths = {}
    for split, (users, items) in (("train", train), ("test", test)):
        paths[split] = folder / f"{split}.txt.gz"
        _write_lightgcn(paths[split], users, items)
    for kind, ids in (("user", user_map), ("item", item_map)):
        text = "org_id remap_id\n" + "".join(f"{org} {new}\n" for new, org in enumerate(ids.astype(str)))
        (folder / f"{kind}_list.txt").write_text(text, encoding="utf-8")
    raws = {s: read_split(p) for s, p in paths.items()}
    inter = build_interactions(name, raws["train"], raws["test"])     # every loader check, before renaming
    stats = inter.stats()
    card = {"name": name, "n_users": inter.n_users, "n_items": inter.n_items,
            "train_interactions": raws["train"].n_pairs, "test_interactions": raws["test"].n_pairs}
    prints = {s: fingerprint(r.users, r.items) for s, r in raws.items()}
    lines = ["# Dataset card written by `lwbench prepare` (docs/adding-a-dataset.md)"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in card.items()]   # a JSON string is a TOML basic string
    lines += ["", "[fingerprints]"] + [f'{s}_sha256 = "{h}"' for s, h in prints.items()]
    (folder / CARD_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    density = (card["train_interactions"] + card["test_interactions"]) / (inter.n_users * inter.n_items)
    return {**card, "density": density, "cold_items": stats.cold_items, "cold_users": stats.cold_users,
            **{f"{s}_sha256": h for s, h in prints.items()}}


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
