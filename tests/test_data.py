"""Dataset loading: format errors name file and line, ids are range-checked, cards are verified,
the validation split follows docs/protocol.md §1.3 and does not depend on the training seed."""
import math
from pathlib import Path

import numpy as np
import pytest

from lwbench.data import cards as card_module
from lwbench.data.interactions import DataError, build_interactions, fingerprint, read_split
from lwbench.data.cards import load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_reads_plain_and_gzip_and_dedups(tmp_path, toy_dir):
    raw = read_split(write(tmp_path / "t.txt", "0 3 1 3\n\n2 5\n"))
    assert list(zip(raw.users, raw.items)) == [(0, 1), (0, 3), (2, 5)]
    assert read_split(toy_dir / "test.txt.gz").n_pairs > 0


@pytest.mark.parametrize("text, message", [
    ("0 1 2\n1 x 3\n", r"t\.txt:2: token 'x' is not an integer"),
    ("0 1 2\n1 2.5\n", r"t\.txt:2: token '2\.5'"),
    ("0 1\n1 -4\n", r"t\.txt:2: negative id -4"),
    ("", "no interactions"),
    ("\n\n3\n", "no interactions"),
])
def test_malformed_lines_name_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_split(write(tmp_path / "t.txt", text))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_split(tmp_path / "nope.txt")


def test_test_ids_outside_the_card_range_are_rejected(tmp_path):
    """An id beyond the card's n_users/n_items stays an error, naming file and line (issue 10); without a
    card the range spans train and test (test_cold_ids_extend_the_range)."""
    train = read_split(write(tmp_path / "train.txt", "0 0 1\n1 1 2\n"))
    card = dict(n_users=2, n_items=3)
    with pytest.raises(DataError, match=r"test\.txt:2: item id 7 .*outside the id range 0..2"):
        build_interactions("x", train, read_split(write(tmp_path / "test.txt", "1 2\n0 7 2\n")), **card)
    with pytest.raises(DataError, match=r"test\.txt:1: user id 5 .*outside the id range 0..1"):
        build_interactions("x", train, read_split(write(tmp_path / "test.txt", "5 1 2\n")), **card)


def test_split_sizes_and_seed_independence(toy):
    test_counts = np.diff((toy.valid + toy.test).tocsr().indptr)
    valid_counts = np.diff(toy.valid.indptr)
    expected = np.array([max(1, math.ceil(c / 3)) if c else 0 for c in test_counts])
    assert (valid_counts == expected).all()
    assert toy.valid.multiply(toy.test).nnz == 0
    assert toy.valid.multiply(toy.train).nnz == 0
    again = build_interactions("toy", *_raw_of(toy), split_seed=2024)
    other = build_interactions("toy", *_raw_of(toy), split_seed=99)
    assert (again.valid != toy.valid).nnz == 0
    assert (other.valid != toy.valid).nnz > 0


def test_legacy_split_follows_the_run_seed(toy):
    a = build_interactions("toy", *_raw_of(toy), legacy_split_seed=2025)
    b = build_interactions("toy", *_raw_of(toy), legacy_split_seed=2025)
    c = build_interactions("toy", *_raw_of(toy), legacy_split_seed=2026)
    assert a.split_mode == "legacy" and (a.valid != b.valid).nnz == 0 and (a.valid != c.valid).nnz > 0
    assert a.valid.nnz == toy.valid.nnz


def _raw_of(inter):
    from lwbench.data.interactions import RawSplit
    full = (inter.valid + inter.test).tocoo()
    train = inter.train.tocoo()
    return (RawSplit(train.row.astype(np.int64), train.col.astype(np.int64), "train"),
            RawSplit(full.row.astype(np.int64), full.col.astype(np.int64), "test"))


def test_fingerprint_is_layout_independent():
    users, items = np.array([1, 0, 0, 1]), np.array([2, 5, 3, 2])
    text = "0 3\n0 5\n1 2\n"
    import hashlib
    assert fingerprint(users, items) == hashlib.sha256(text.encode()).hexdigest()


def test_folder_path_works_as_dataset(toy_dir):
    loaded = load_dataset(str(toy_dir))
    assert loaded.interactions.name == "toy" and loaded.verification["train"] == "unverified"


def test_unknown_dataset_lists_cards():
    with pytest.raises(DataError, match="known datasets are .*gowalla"):
        load_dataset("movielens-9000")


def test_missing_files_say_what_to_put_where(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("yelp2020", data_dir=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "yelp2020") in message and "train.txt" in message
    assert "raw.githubusercontent.com/xurong-liang/LEGCF" in message


def test_fingerprint_mismatch_is_an_error(tmp_path, monkeypatch, toy_dir):
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "toycard.toml").write_text('name = "toycard"\n[fingerprints]\ntrain_sha256 = "' + "0" * 64 + '"\n')
    monkeypatch.setattr(card_module, "CARDS", cards)
    data = tmp_path / "data" / "toycard"
    data.mkdir(parents=True)
    for name in ("train.txt", "test.txt.gz"):
        (data / name).write_bytes((toy_dir / name).read_bytes())
    with pytest.raises(DataError, match="fingerprint .* does not match the toycard card"):
        load_dataset("toycard", data_dir=str(tmp_path / "data"))


def test_synthetic_is_deterministic_and_shaped():
    a = load_dataset("synthetic").interactions
    b = load_dataset("synthetic").interactions
    assert (a.train != b.train).nnz == 0 and (a.test != b.test).nnz == 0
    assert a.n_users == 3000 and a.n_items == 2000
    degrees = np.diff(a.train.indptr)
    assert degrees.min() >= 4 and degrees.max() > 5 * np.median(degrees)  # heavy tail


@pytest.mark.skipif(not (SHARED / "gowalla" / "train.txt.gz").exists(), reason="shared Gowalla files not present")
def test_gowalla_card_matches_shared_files():
    loaded = load_dataset("gowalla", data_dir=str(SHARED))
    stats = loaded.interactions.stats()
    assert loaded.verification == {"train": "fingerprint", "test": "fingerprint"}
    assert (stats.n_users, stats.n_items, stats.n_train) == (29858, 40981, 810128)
    assert (stats.n_valid, stats.n_test) == (80990, 136252)  # docs/protocol.md §1.3 pair counts
