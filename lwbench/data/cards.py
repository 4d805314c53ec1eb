"""Dataset cards, file lookup, download and verification.

A card (``lwbench/data/cards/<name>.toml``, package data) names a dataset, its statistics, canonical fingerprints, public
download locations and per-dataset trainer defaults. Files are looked up, in order, in:

1. ``--data-dir`` / the ``LWBENCH_DATA`` environment variable (a folder holding ``<name>/train.txt[.gz]``),
2. the user cache (``LWBENCH_CACHE``, default ``~/.cache/lwbench/datasets``),
3. a download from the card's locations into the cache, verified against the card.

``--dataset`` may also be a path to any folder holding ``train.txt[.gz]`` and ``test.txt[.gz]``.
Data files never live in the repository.
"""
from __future__ import annotations

import hashlib
import logging
import os
from importlib import resources
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lwbench.data import synthetic
from lwbench.data.interactions import DataError, Interactions, RawSplit, build_interactions, fingerprint, read_split

logger = logging.getLogger(__name__)

CARDS = resources.files("lwbench.data") / "cards"   # package data: found the same way installed or not
SPLITS = ("train", "test")
CARD_FILE = "card.toml"   # a folder's own card (written by ``lwbench prepare``), checked when it is loaded


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
    def from_toml(cls, path) -> "DatasetCard":
        """``path``: a file path or an ``importlib.resources`` entry (built-in cards are package data)."""
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
        return cls(name=raw["name"], description=raw.get("description", ""),
                   n_users=raw.get("n_users"), n_items=raw.get("n_items"),
                   counts={s: raw[f"{s}_interactions"] for s in SPLITS if f"{s}_interactions" in raw},
                   fingerprints={s: raw.get("fingerprints", {}).get(f"{s}_sha256") for s in SPLITS
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
                 overlap: str = "error") -> LoadedDataset:
    """Load a dataset by card name or folder path (see the module docstring for the lookup order).
    ``cold``/``overlap``: what to do with cold test pairs and test pairs also in train
    (:func:`~lwbench.data.interactions.build_interactions`)."""
    path = Path(name_or_path).expanduser()
    kwargs = dict(split_seed=split_seed, legacy_split_seed=legacy_split_seed, cold=cold, overlap=overlap)
    if path.is_dir():
        raws = {s: read_split(_require(path, s)) for s in SPLITS}
        card = DatasetCard.from_toml(path / CARD_FILE) if (path / CARD_FILE).is_file() else None
        verification = ({s: _verify(card, path, s, raws[s]) for s in SPLITS} if card else
                        {s: "unverified" for s in SPLITS})
        inter = build_interactions(path.name, raws["train"], raws["test"], n_users=card and card.n_users,
                                   n_items=card and card.n_items, **kwargs)
        logger.info("dataset %s (%s): %s", path, f"checked against its {CARD_FILE}" if card else "no card",
                    inter.stats().describe())
        return LoadedDataset(inter, card, str(path), verification)
    card = get_card(name_or_path)
    if card.generator is not None:
        train, test = synthetic.generate(**card.generator)
        inter = build_interactions(card.name, train, test, n_users=card.generator["n_users"],
                                   n_items=card.generator["n_items"], **kwargs)
        return LoadedDataset(inter, card, "generated", {s: "generated" for s in SPLITS})
    folder = _locate(card, data_dir, offline)
    raws = {s: read_split(_split_file(folder, s)) for s in SPLITS}
    verification = {s: _verify(card, folder, s, raws[s]) for s in SPLITS}
    inter = build_interactions(card.name, raws["train"], raws["test"], n_users=card.n_users,
                               n_items=card.n_items, **kwargs)
    return LoadedDataset(inter, card, str(folder), verification)


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
    urls = "\n".join(f"  - {s}.txt: {' or '.join(card.downloads.get(s, ['(no public location known)']))}"
                     for s in SPLITS)
    raise DataError(
        f"dataset {card.name!r}: train.txt[.gz] and test.txt[.gz] were not found together in any of\n{where}\n"
        f"and could not be downloaded ({'; '.join(errors)}).\n"
        f"Download these files (plain .txt, unmodified) into {target} or into <data-dir>/{card.name}:\n{urls}\n"
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
