"""Dataset cards, file lookup, download and verification.

A card (``lwbench/data/cards/<name>.toml``, package data) names a dataset, its statistics, canonical fingerprints, public
download locations and per-dataset trainer defaults. Files are looked up, in order, in:

1. ``--data-dir`` / the ``LWBENCH_DATA`` environment variable (a folder holding ``<name>/train.txt[.gz]``),
2. the user cache (``LWBENCH_CACHE``, default ``~/.cache/lwbench/datasets``),
3. a download from the card's locations into the cache, verified against the card.

``--dataset`` may also be a path to any folder holding ``train.txt[.gz]`` and ``test.txt[.gz]`` (and, for
``--valid-from file``, ``valid.txt[.gz]``). Data files never live in the repository.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import tomllib

from lwbench.data import synthetic
from lwbench.data.interactions import (
    VALID_MODES,
    DataError,
    Interactions,
    RawSplit,
    build_interactions,
    fingerprint,
    read_split,
)

logger = logging.getLogger(__name__)

CARDS = resources.files("lwbench.data") / "cards"   # package data: found the same way installed or not
SPLITS = ("train", "test")
CARD_FILE = "card.toml"   # a folder's own card (written by ``lwbench prepare``), checked when it is loaded
# The temporary folder of a running (or killed) ``lwbench prepare``: ``.<name>.prepare-<pid>-<ns>``; never a dataset.
PREPARE_TMP = re.compile(r"^\.(?P<name>.+)\.prepare-(?P<pid>\d+)-(?P<stamp>\d+)$")

# The keys a card may hold, with their types: a wrong type is an error naming the file and the key.
# Other top-level keys (e.g. the ``[prepared]`` table that ``prepare`` writes) are ignored.
CARD_KEYS = {"name": str, "description": str, "n_users": int, "n_items": int, "train_interactions": int,
             "test_interactions": int, "valid_interactions": int, "source": str, "fingerprints": dict,
             "upstream": dict, "downloads": dict, "generator": dict, "trainer": dict, "methods": dict}
TYPE_WORDS = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table",
              list: "a list"}


def _type_word(value) -> str:
    import datetime as dt
    if isinstance(value, (dt.date, dt.time)):
        return "a date/time"
    return TYPE_WORDS.get(type(value), type(value).__name__)


def _check_card(path, raw: dict) -> None:
    """Every known key of a parsed card has its type (bool is not an integer); the tables hold what they
    should. Raises a one-line :class:`DataError` naming the file and the key."""
    def wrong(key: str, expected: str, value) -> DataError:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        return DataError(f"{path}: key {key!r} must be {expected}, got {_type_word(value)} ({shown}); fix the card "
                         "(docs/adding-a-dataset.md §5)")
    if "name" not in raw:
        raise DataError(f"{path}: no 'name' key; a card needs name = \"...\" (the dataset's name, as the file name)")
    for key, kind in CARD_KEYS.items():
        if key not in raw:
            continue
        value = raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise wrong(key, TYPE_WORDS[kind], value)
        if kind is int and value < (1 if key in ("n_users", "n_items") else 0):
            raise wrong(key, "a positive integer" if key.startswith("n_") else "a count (>= 0)", value)
    if not raw["name"].strip():
        raise DataError(f"{path}: key 'name' is empty; a card needs the dataset's name")
    for table in ("fingerprints", "upstream"):
        for key, value in raw.get(table, {}).items():
            if not isinstance(value, str):
                raise wrong(f"{table}.{key}", "a string (a hex digest)", value)
    for key, value in raw.get("downloads", {}).items():
        if not isinstance(value, list) or not all(isinstance(url, str) for url in value):
            raise wrong(f"downloads.{key}", "a list of URL strings", value)
    for key, value in raw.get("methods", {}).items():
        if not isinstance(value, dict):
            raise wrong(f"methods.{key}", "a table of option defaults", value)


@dataclass(frozen=True)
class DatasetCard:
    name: str
    description: str = ""
    n_users: int | None = None
    n_items: int | None = None
    counts: dict = field(default_factory=dict)        # split -> expected distinct pairs
    fingerprints: dict = field(default_factory=dict)  # split -> sha256 or "unavailable"
    upstream_blobs: dict = field(default_factory=dict)  # split -> git blob sha1 of the raw file
    downloads: dict = field(default_factory=dict)     # split -> list of URLs
    generator: dict | None = None                      # synthetic parameters, when generated
    trainer: dict = field(default_factory=dict)       # per-dataset trainer defaults
    methods: dict = field(default_factory=dict)       # per-dataset method option defaults
    source: str = ""                                   # where the files come from, when not downloadable as is

    @classmethod
    def from_toml(cls, path) -> DatasetCard:
        """``path``: a file path or an ``importlib.resources`` entry (built-in cards are package data). A card
        that is not valid TOML, lacks ``name`` or gives a key the wrong type is a :class:`DataError` naming the
        file and the key."""
        try:
            with path.open("rb") as handle:
                raw = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise DataError(f"{path}: not a valid TOML card ({exc}); fix the card "
                            "(docs/adding-a-dataset.md §5)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read the card ({exc})") from None
        _check_card(path, raw)
        splits = (*SPLITS, "valid")
        return cls(name=raw["name"], description=raw.get("description", ""),
                   n_users=raw.get("n_users"), n_items=raw.get("n_items"),
                   counts={s: raw[f"{s}_interactions"] for s in splits if f"{s}_interactions" in raw},
                   fingerprints={s: raw.get("fingerprints", {}).get(f"{s}_sha256") for s in splits
                                 if raw.get("fingerprints", {}).get(f"{s}_sha256")},
                   upstream_blobs={s: raw.get("upstream", {}).get(f"{s}_git_blob_sha1") for s in SPLITS
                                   if raw.get("upstream", {}).get(f"{s}_git_blob_sha1")},
                   downloads=raw.get("downloads", {}), generator=raw.get("generator"),
                   trainer=raw.get("trainer", {}), methods=raw.get("methods", {}), source=raw.get("source", ""))


def available_cards() -> dict[str, DatasetCard]:
    found = sorted((entry for entry in CARDS.iterdir() if entry.name.endswith(".toml")), key=lambda e: e.name)
    return {entry.name[: -len(".toml")]: DatasetCard.from_toml(entry) for entry in found}


def get_card(name: str) -> DatasetCard:
    cards = available_cards()
    if name not in cards:
        raise DataError(f"unknown dataset {name!r}: known datasets are {', '.join(cards)}; "
                        "or pass a path to a folder holding train.txt[.gz] and test.txt[.gz]")
    return cards[name]


def cache_dir() -> Path:
    return Path(os.environ.get("LWBENCH_CACHE", Path.home() / ".cache" / "lwbench")) / "datasets"


def _split_file(folder: Path, split: str) -> Path | None:
    for name in (f"{split}.txt.gz", f"{split}.txt"):
        if (folder / name).is_file():
            return folder / name
    return None


def git_blob_sha1(path: Path) -> str:
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class LoadedDataset:
    """Interactions plus where they came from and what was verified."""

    interactions: Interactions
    card: DatasetCard | None
    source: str
    verification: dict  # split -> "fingerprint", "git-blob", "unverified" or "generated"


def load_dataset(name_or_path: str, *, data_dir: str | None = None, split_seed: int = 2024,
                 legacy_split_seed: int | None = None, offline: bool | None = None, cold: str = "keep",
                 overlap: str = "error", valid_from: str = "test") -> LoadedDataset:
    """Load a dataset by card name or folder path (see the module docstring for the lookup order).
    ``cold``/``overlap``: what to do with cold test pairs and test pairs also in train
    (:func:`~lwbench.data.interactions.build_interactions`). ``valid_from``: ``"test"`` (default) carves
    validation out of test (docs/protocol.md §1.3); ``"file"`` reads the folder's ``valid.txt[.gz]`` as the
    validation set and keeps all of test (then ``verification`` has a ``valid`` entry too)."""
    if valid_from not in VALID_MODES:
        raise DataError(f"--valid-from {valid_from!r}: expected one of {', '.join(VALID_MODES)}")
    path = Path(name_or_path).expanduser()
    kwargs = dict(split_seed=split_seed, legacy_split_seed=legacy_split_seed, cold=cold, overlap=overlap)
    if path.is_dir():
        if PREPARE_TMP.match(path.name):
            raise DataError(f"{path}: the temporary folder of an unfinished or killed `lwbench prepare`, not a "
                            "dataset; run prepare again (it removes it) and use the folder it names")
        raws = {s: read_split(_require(path, s)) for s in SPLITS}
        card = DatasetCard.from_toml(path / CARD_FILE) if (path / CARD_FILE).is_file() else None
        valid = _valid_file(path, valid_from)
        verification = ({s: _verify(card, path, s, raws[s]) for s in SPLITS} if card else
                        {s: "unverified" for s in SPLITS})
        if valid is not None:
            verification["valid"] = _verify(card, path, "valid", valid) if card else "unverified"
        inter = build_interactions(path.name, raws["train"], raws["test"], n_users=card and card.n_users,
                                   n_items=card and card.n_items, valid=valid, **kwargs)
        logger.info("dataset %s (%s): %s", path, f"checked against its {CARD_FILE}" if card else "no card",
                    inter.stats().describe())
        return LoadedDataset(inter, card, str(path), verification)
    card = get_card(name_or_path)
    if card.generator is not None:
        if valid_from == "file":
            raise DataError(f"dataset {card.name!r} is generated and has no validation file; --valid-from file "
                            "needs a folder holding valid.txt[.gz] (drop --valid-from, or use --dataset DIR)")
        train, test = synthetic.generate(**card.generator)
        inter = build_interactions(card.name, train, test, n_users=card.generator["n_users"],
                                   n_items=card.generator["n_items"], **kwargs)
        return LoadedDataset(inter, card, "generated", {s: "generated" for s in SPLITS})
    folder = _locate(card, data_dir, offline)
    raws = {s: read_split(_split_file(folder, s)) for s in SPLITS}
    verification = {s: _verify(card, folder, s, raws[s]) for s in SPLITS}
    valid = _valid_file(folder, valid_from)
    if valid is not None:
        verification["valid"] = _verify(card, folder, "valid", valid)
    inter = build_interactions(card.name, raws["train"], raws["test"], n_users=card.n_users,
                               n_items=card.n_items, valid=valid, **kwargs)
    return LoadedDataset(inter, card, str(folder), verification)


def _valid_file(folder: Path, valid_from: str) -> RawSplit | None:
    """The folder's validation file when ``valid_from == "file"`` (an error naming the folder when it has
    none); by default None, with a warning when the folder holds one that goes unused."""
    found = _split_file(folder, "valid")
    if valid_from == "file":
        if found is None:
            raise DataError(f"{folder}: --valid-from file needs valid.txt or valid.txt.gz in this folder (`lwbench "
                            "prepare INPUT --out DIR --valid-fraction 0.1` writes one); or drop --valid-from file "
                            "to carve validation out of test")
        return read_split(found)
    if found is not None:
        logger.warning("%s is not used: validation is carved out of test (the default, docs/protocol.md §1.3); "
                       "pass --valid-from file to validate on it and test on all of test", found)
    return None


def _require(folder: Path, split: str) -> Path:
    found = _split_file(folder, split)
    if found is None:
        raise DataError(f"{folder}: no {split}.txt or {split}.txt.gz in this folder")
    return found


def candidate_folders(name: str, data_dir: str | None) -> list[Path]:
    roots = [Path(r).expanduser() for r in (data_dir, os.environ.get("LWBENCH_DATA")) if r]
    return [root / name for root in roots] + [cache_dir() / name]


def find_local_folder(name: str, data_dir: str | None) -> Path | None:
    """The first lookup folder that holds both splits of ``name`` (no download), or None."""
    for folder in candidate_folders(name, data_dir):
        if all(_split_file(folder, s) for s in SPLITS):
            return folder
    return None


def available_locally(name: str, data_dir: str | None = None) -> bool:
    """Whether a card's dataset loads without a download: generated, or its files are found."""
    card = get_card(name)
    return card.generator is not None or find_local_folder(name, data_dir) is not None


def _locate(card: DatasetCard, data_dir: str | None, offline: bool | None) -> Path:
    folders = candidate_folders(card.name, data_dir)
    found = find_local_folder(card.name, data_dir)
    if found is not None:
        return found
    target = cache_dir() / card.name
    if offline is None:
        offline = os.environ.get("LWBENCH_OFFLINE", "") not in ("", "0")
    errors = ["downloads disabled (offline)"] if offline else _download(card, target)
    if not errors:
        return target
    where = "\n".join(f"  - {f}  (has: {', '.join(p.name for p in _present(f)) or 'nothing'})" for f in folders)
    if card.downloads:
        urls = "\n".join(f"  - {s}.txt: {' or '.join(card.downloads.get(s, ['(no public location known)']))}"
                         for s in SPLITS)
        todo = f"Download these files (plain .txt, unmodified) into {target} or into <data-dir>/{card.name}:\n{urls}\n"
    else:       # e.g. a split whose upstream files must be merged or converted first
        todo = f"Make train.txt and test.txt as the card's source says, in {target} or in <data-dir>/{card.name}.\n"
    raise DataError(
        f"dataset {card.name!r}: train.txt[.gz] and test.txt[.gz] were not found together in any of\n{where}\n"
        f"and could not be downloaded ({'; '.join(errors)}).\n" + todo
        + (f"Source: {card.source}\n" if card.source else "") +
        f"then run again (or point --data-dir / LWBENCH_DATA at the folder that holds {card.name}/).")


def _present(folder: Path) -> list[Path]:
    return [p for s in SPLITS if (p := _split_file(folder, s)) is not None]


def _download(card: DatasetCard, target: Path) -> list[str]:
    """Fetch each missing split into ``target``; return the errors (empty on success)."""
    errors = []
    target.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        if _split_file(target, split):
            continue
        urls = card.downloads.get(split, [])
        if not urls:
            errors.append(f"the card lists no download location for {split}")
        for url in urls:
            tmp = target / f".{split}.txt.part"
            try:
                logger.info("downloading %s %s.txt from %s", card.name, split, url)
                with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
                    out.write(response.read())
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{url}: {exc}")
                continue
            expected = card.upstream_blobs.get(split)
            if expected and git_blob_sha1(tmp) != expected:
                errors.append(f"{url}: git blob {git_blob_sha1(tmp)} != expected {expected}")
                tmp.unlink()
                continue
            tmp.rename(target / f"{split}.txt")
            break
    return errors if any(_split_file(target, s) is None for s in SPLITS) else []


def _verify(card: DatasetCard, folder: Path, split: str, raw: RawSplit) -> str:
    """Check a loaded split against its card; raise on any mismatch, say what was checked."""
    expected_count = card.counts.get(split)
    if expected_count is not None and raw.n_pairs != expected_count:
        raise DataError(f"{raw.path}: {raw.n_pairs} distinct {split} pairs, but the {card.name} card says "
                        f"{expected_count}; the file is not the canonical split (re-download it)")
    if split not in SPLITS and expected_count is None and not card.fingerprints.get(split):
        logger.warning("%s could not be verified (the card has no %s count or fingerprint)", raw.path, split)
        return "unverified"
    expected = card.fingerprints.get(split)
    if expected and expected != "unavailable":
        got = fingerprint(raw.users, raw.items)
        if got != expected:
            raise DataError(f"{raw.path}: fingerprint {got} does not match the {card.name} card ({expected}); "
                            "the file is not the canonical split (re-download it from the card's locations)")
        return "fingerprint"
    plain = folder / f"{split}.txt"
    blob = card.upstream_blobs.get(split)
    if blob and plain.is_file():
        if git_blob_sha1(plain) != blob:
            raise DataError(f"{plain}: git blob id does not match the upstream file of the {card.name} card "
                            f"({blob}); use the unmodified upstream download")
        return "git-blob"
    logger.warning("%s could not be verified (the card has no fingerprint and the file is not the raw upstream "
                   "%s.txt); only its pair count was checked", raw.path, split)
    return "unverified"
