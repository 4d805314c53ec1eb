"""Dataset loading: format errors name file and line, ids are range-checked, cards are verified,
the validation split follows docs/protocol.md §1.3 and does not depend on the training seed."""
import math
from pathlib import Path

import numpy as np
import pytest

from lwbench.data import cards as card_module
from lwbench.data.cards import load_dataset
from lwbench.data.interactions import DataError, build_interactions, fingerprint, read_split

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


@pytest.mark.parametrize(("text", "message"), [
    ("0 1 5\n0 2 3\n1 1 4\n", r"every line has 3 fields and users repeat across lines \(user 0 on lines 1 and 2\)"
                              r".*header line 'user item rating',"),
    ("7 1 5 881250949\n3 2 3 891717742\n7 3 1 878887116\n", r"4 fields .*user 7 on lines 1 and 3.*"
                                                              r"'user item rating timestamp'"),
])
def test_one_pair_per_line_with_values_is_not_read_as_lightgcn_text(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_split(write(tmp_path / "train.txt", text))


def test_one_pair_per_line_without_values_and_one_line_per_user_read_as_lightgcn_text(tmp_path):
    assert read_split(write(tmp_path / "a.txt", "0 1\n0 2\n1 1\n")).n_pairs == 3
    assert read_split(write(tmp_path / "b.txt", "0 1 5\n1 0 5\n2 1 5\n")).n_pairs == 6


def test_missing_files_of_a_card_without_downloads_say_how_to_make_them(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("lastfm", data_dir=str(tmp_path))
    message = str(info.value)
    assert "Make train.txt and test.txt as the card's source says" in message
    assert "lwbench prepare" in message and "Download these files" not in message


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


# --- cold entities and up-front checks (issue 10; issue 13 item 4) -------------------------------------

def test_cold_ids_extend_the_range_and_are_counted(tmp_path):
    """Items and users that occur only in test widen the id range (docs/protocol.md §1.2) and are counted."""
    train = read_split(write(tmp_path / "train.txt", "0 0 1\n1 1 2\n"))
    test = read_split(write(tmp_path / "test.txt", "0 2 7 3\n1 0 7\n4 1 2\n"))
    inter = build_interactions("x", train, test)
    assert (inter.n_users, inter.n_items) == (5, 8)
    stats = inter.stats()
    assert (stats.cold_items, stats.cold_users) == (5, 1)   # items 3..7, user 4
    assert (inter.valid + inter.test)[0, 7] == 1 and inter.checks["cold_dropped"] == 0


def test_cold_drop_removes_cold_test_pairs_and_says_how_many(tmp_path, caplog):
    train = read_split(write(tmp_path / "train.txt", "0 0 1 4\n1 1 2 5\n"))
    test = read_split(write(tmp_path / "test.txt", "0 2 7 5\n1 0 4 7\n4 1 2\n"))  # cold: items 3, 6, 7; user 4
    inter = build_interactions("x", train, test, cold="drop")
    assert pairs_of(inter.valid + inter.test) == {(0, 2), (0, 5), (1, 0), (1, 4)}
    assert inter.checks["cold_dropped"] == 4 and inter.stats().cold_items == 3
    assert "dropped 4 cold test pairs" in caplog.text
    legacy = build_interactions("x", train, test, cold="drop", legacy_split_seed=3)
    assert pairs_of(legacy.valid + legacy.test) == pairs_of(inter.valid + inter.test)
    assert (inter.n_users, inter.n_items) == (5, 8)  # the range stays: the rows exist, only pairs go


def test_train_test_overlap_is_an_error_or_dropped_with_a_count(tmp_path, caplog):
    train = read_split(write(tmp_path / "train.txt", "0 0 1\n1 1 2\n"))
    test = read_split(write(tmp_path / "test.txt", "0 1 2 3\n1 2 0 3\n"))
    with pytest.raises(DataError, match=r"test\.txt:1: 2 test pairs are also training pairs .*--overlap drop"):
        build_interactions("x", train, test)
    inter = build_interactions("x", train, test, overlap="drop")
    assert inter.checks["overlap_dropped"] == 2 and (inter.valid + inter.test).multiply(inter.train).nnz == 0
    assert "dropped 2 train/test overlapping test pairs" in caplog.text


def test_a_leave_one_out_test_file_is_an_error_naming_the_count(tmp_path):
    train = read_split(write(tmp_path / "train.txt", "0 0 1\n1 1 2\n2 0 2\n"))
    test = read_split(write(tmp_path / "test.txt", "0 2\n1 0\n2 1\n"))
    with pytest.raises(DataError, match=r"3 of 3 test users have a single test item.*lwbench prepare"):
        build_interactions("x", train, test)


def test_most_users_without_test_items_is_a_warning_with_the_count(tmp_path, caplog):
    train = read_split(write(tmp_path / "train.txt", "0 0 1\n1 1 2\n2 0 2\n"))
    test = read_split(write(tmp_path / "test.txt", "0 2\n1 0\n2 1 3 4\n"))
    inter = build_interactions("x", train, test)
    assert inter.checks["users_without_test"] == 2 and "2 of 3 test users" in caplog.text


@pytest.mark.parametrize("text, message", [
    ("0 1 2\n1 \u0663\n", r"t\.txt:2: non-ASCII byte 0xd9 at column 3"),        # Arabic-Indic digit three
    ("0 1 2\n1 99999999999999999999\n", r"t\.txt:2: id 99999999999999999999 does not fit a 64-bit integer"),
    ("0 1\n1 9223372036854775808\n", r"t\.txt:2: id 9223372036854775808 does not fit"),   # 2**63 would wrap
])
def test_non_ascii_and_overflowing_ids_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(DataError, match=message):
        read_split(path)


def test_a_utf8_byte_order_mark_is_skipped(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbf0 3 1\n2 5\n")
    raw = read_split(path)
    assert list(zip(raw.users, raw.items)) == [(0, 1), (0, 3), (2, 5)]


def test_ids_far_beyond_the_distinct_ids_point_to_prepare(tmp_path):
    """Rule: the largest id may be at most 10 x distinct ids + 1000; beyond, remap with prepare."""
    train = read_split(write(tmp_path / "train.txt", "0 0 1\n10000000 1 2\n"))
    test = read_split(write(tmp_path / "test.txt", "0 2 3\n"))
    with pytest.raises(DataError, match=r"train\.txt:2: user id 10000000 but only 2 distinct .*lwbench prepare"):
        build_interactions("x", train, test)
    ok = read_split(write(tmp_path / "ok.txt", "0 0 1\n1020 1 2\n"))   # 1020 <= 10 x 2 + 1000
    assert build_interactions("x", ok, test).n_users == 1021


# --- the official split, pair for pair (issue 11 item 3) ------------------------------------------------

def official_split(path: Path, seed: int) -> tuple[set, set]:
    """The official LEGCF/C2F loader's validation draw, written as that code does it (docs/protocol.md §1.3)."""
    np.random.seed(seed)
    valid, test = set(), set()
    for line in path.read_text().splitlines():
        parts = line.strip().split(" ")
        items = list(set([int(i) for i in parts[1:]]))
        if items:
            picked = list(np.random.choice(items, size=max(1, int(np.ceil((1 / 3) * len(items)))), replace=False))
            valid |= {(int(parts[0]), int(i)) for i in picked}
            test |= {(int(parts[0]), int(i)) for i in set(items).difference(picked)}
    return valid, test


def pairs_of(matrix) -> set:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


def test_legacy_split_equals_the_official_split_pair_for_pair(tmp_path):
    """Python's set order of small ints depends on insertion order and table size, not on sorted order
    (e.g. list({9, 1, 17, 33, 2}) == [1, 33, 2, 9, 17]): the draw must index the same list."""
    rng = np.random.default_rng(0)
    lines = []
    for user in range(60):
        items = rng.choice(np.arange(3, 400), size=int(rng.integers(1, 25)), replace=False)
        items = np.concatenate([items, items[:2]])          # repeated items on a line
        lines.append(" ".join(map(str, [user, *rng.permutation(items)])))
    lines.insert(7, "60")                                  # a user with no test item draws nothing
    test_path = write(tmp_path / "test.txt", "\n".join(lines) + "\n")
    train = read_split(write(tmp_path / "train.txt", "".join(f"{u} 0 1 2\n" for u in range(61))))
    for seed in (2024, 2025):
        inter = build_interactions("x", train, read_split(test_path), legacy_split_seed=seed)
        valid, test = official_split(test_path, seed)
        assert pairs_of(inter.valid) == valid and pairs_of(inter.test) == test
    sorted_draw = official_split(write(tmp_path / "sorted.txt", "\n".join(
        " ".join(map(str, [int(line.split()[0]), *sorted(set(map(int, line.split()[1:])))])) for line in lines)
        + "\n"), 2024)[0]
    assert sorted_draw != official_split(test_path, 2024)[0], "the fixture must tell set order from sorted order"


def test_legacy_split_needs_one_line_per_user(tmp_path):
    train = read_split(write(tmp_path / "train.txt", "0 0 1\n"))
    test = read_split(write(tmp_path / "test.txt", "0 2 3\n0 4\n"))
    with pytest.raises(DataError, match=r"test\.txt:1: user 0 has more than one line"):
        build_interactions("x", train, test, legacy_split_seed=1)


@pytest.mark.skipif(not (SHARED / "lastfm").is_dir(), reason="lastfm is not in ../shared/datasets")
def test_lastfm_loads_with_its_cold_items():
    data = load_dataset("lastfm", data_dir=str(SHARED))
    stats = data.interactions.stats()
    assert data.verification == {"train": "fingerprint", "test": "fingerprint"}
    assert (stats.n_users, stats.n_items, stats.cold_items, stats.cold_users) == (1885, 17388, 2247, 0)


# --- issue 20: drops that empty test, malformed cards, a validation file of the dataset's own --------------

def test_drops_that_empty_test_say_what_happened(tmp_path):
    train = read_split(write(tmp_path / "train.txt", "0 0 1\n1 1 2\n"))
    cold = read_split(write(tmp_path / "test.txt", "0 5 6\n1 7\n"))
    with pytest.raises(DataError, match=r"test\.txt: all 3 test pairs were dropped, 3 as cold .*--cold drop.*"
                                        r"nothing is left to test.*--cold keep") as caught:
        build_interactions("x", train, cold, cold="drop")
    assert "single test item" not in str(caught.value) and "leave-one-out" not in str(caught.value)
    seen = read_split(write(tmp_path / "seen.txt", "0 0\n1 1 2\n"))
    with pytest.raises(DataError, match=r"all 3 test pairs were dropped, 3 as also training pairs \(--overlap drop\)"):
        build_interactions("x", train, seen, overlap="drop")
    halved = read_split(write(tmp_path / "halved.txt", "0 2 5\n1 0 7\n"))    # one cold pair per user: one left
    with pytest.raises(DataError, match=r"single test item.*\(after 2 by --cold drop removed test pairs"):
        build_interactions("x", train, halved, cold="drop")


def card_folder(tmp_path: Path, card: str, toy_dir: Path) -> Path:
    folder = tmp_path / "d"
    folder.mkdir()
    for name in ("train.txt", "test.txt.gz"):
        (folder / name).write_bytes((toy_dir / name).read_bytes())
    (folder / "card.toml").write_text(card)
    return folder


@pytest.mark.parametrize("card, message", [
    ('name = "d"\nn_users = \n', r"card\.toml: not a valid TOML card \(.*line 2"),
    ('description = "no name"\n', r"card\.toml: no 'name' key"),
    ('name = "d"\nn_users = "300"\n', r"card\.toml: key 'n_users' must be an integer, got a string \('300'\)"),
    ('name = "d"\nn_items = true\n', r"card\.toml: key 'n_items' must be an integer, got true or false"),
    ('name = "d"\ntrain_interactions = 1.5\n', r"key 'train_interactions' must be an integer, got a number"),
    ('name = 3\n', r"card\.toml: key 'name' must be a string, got an integer"),
    ('name = "d"\nn_users = 0\n', r"key 'n_users' must be a positive integer"),
    ('name = "d"\nfingerprints = "x"\n', r"key 'fingerprints' must be a table"),
    ('name = "d"\n[fingerprints]\ntrain_sha256 = 5\n', r"key 'fingerprints\.train_sha256' must be a string"),
    ('name = "d"\n[downloads]\ntrain = "http://x"\n', r"key 'downloads\.train' must be a list of URL strings"),
])
def test_a_malformed_card_is_a_one_line_error_naming_file_and_key(tmp_path, toy_dir, capsys, card, message):
    from lwbench.cli import main
    folder = card_folder(tmp_path, card, toy_dir)
    with pytest.raises(DataError, match=message):
        load_dataset(str(folder))
    assert main(["--dataset", str(folder), "--plan", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(folder / "card.toml") in err


def three_files(tmp_path: Path, valid: str) -> Path:
    folder = tmp_path / "v"
    folder.mkdir()
    write(folder / "train.txt", "".join(f"{u} {u % 7} {(u + 1) % 7} {(u + 2) % 7}\n" for u in range(30)))
    write(folder / "test.txt", "".join(f"{u} {(u + 3) % 7}\n" for u in range(30)))     # leave-one-out
    write(folder / "valid.txt", valid)
    return folder


def test_a_validation_file_validates_and_all_of_test_is_tested(tmp_path, caplog):
    folder = three_files(tmp_path, "".join(f"{u} {(u + 4) % 7}\n" for u in range(30)))
    with pytest.raises(DataError, match="30 of 30 test users have a single test item.*--valid-from file"):
        load_dataset(str(folder))                          # the default carves validation out of test
    assert "valid.txt is not used" in caplog.text
    data = load_dataset(str(folder), valid_from="file")
    inter = data.interactions
    assert pairs_of(inter.test) == {(u, (u + 3) % 7) for u in range(30)}
    assert pairs_of(inter.valid) == {(u, (u + 4) % 7) for u in range(30)}
    assert inter.checks["valid_from"] == "file" and data.verification["valid"] == "unverified"
    assert inter.checks["users_without_test"] == 0


@pytest.mark.parametrize("valid, kwargs, message", [
    ("0 1\n", {}, r"valid\.txt:1: 1 validation pairs are also training pairs \(e\.g\. user 0, item 1\).*--overlap drop"),
    ("0 3\n", {}, r"valid\.txt:1: 1 validation pairs are also test pairs"),
    ("0 1\n", {"overlap": "drop"}, r"valid\.txt: all 1 validation pairs were dropped, 1 as also training pairs"),
    ("0 5\n99 1\n", {}, None),                             # without a card the id range spans all three files
])
def test_a_validation_file_follows_the_rules_of_test(tmp_path, valid, kwargs, message):
    folder = three_files(tmp_path, valid)
    if message is None:
        assert load_dataset(str(folder), valid_from="file", **kwargs).interactions.n_users == 100
        return
    with pytest.raises(DataError, match=message):
        load_dataset(str(folder), valid_from="file", **kwargs)


def test_valid_from_file_needs_a_file_and_no_legacy_split(tmp_path, toy_dir):
    with pytest.raises(DataError, match=r"--valid-from file needs valid\.txt or valid\.txt\.gz in this folder"):
        load_dataset(str(toy_dir), valid_from="file")
    with pytest.raises(DataError, match="synthetic.* is generated and has no validation file"):
        load_dataset("synthetic", valid_from="file")
    folder = three_files(tmp_path, "0 5\n")
    with pytest.raises(DataError, match="--legacy-split .* cannot be combined with a validation file"):
        load_dataset(str(folder), valid_from="file", legacy_split_seed=3)


def test_a_validation_file_is_checked_against_the_card(tmp_path, toy_dir):
    folder = three_files(tmp_path, "0 5\n")
    (folder / "card.toml").write_text('name = "v"\nn_users = 30\nn_items = 7\nvalid_interactions = 2\n')
    with pytest.raises(DataError, match=r"valid\.txt: 1 distinct valid pairs, but the v card says 2"):
        load_dataset(str(folder), valid_from="file")
    (folder / "valid.txt").write_text("0 5\n31 2\n")
    with pytest.raises(DataError, match=r"valid\.txt:2: user id 31 .*outside the id range 0..29"):
        load_dataset(str(folder), valid_from="file")


def test_valid_from_reaches_the_config_only_when_it_is_not_the_default(tmp_path, capsys):
    """A default run's configuration (and so its hash and run id) is what it was before the option existed;
    ``--valid-from file`` adds ``valid_from`` and a ``valid`` verification, so it is another configuration."""
    import json

    from lwbench.cli import main
    from lwbench.grid.runner import plan_runs
    from lwbench.reports.comparable import comparable_key
    folder = three_files(tmp_path, "".join(f"{u} {(u + 4) % 7}\n" for u in range(30)))
    write(folder / "test.txt", "".join(f"{u} {(u + 3) % 7} {(u + 5) % 7}\n" for u in range(30)))
    specs = {mode: plan_runs(["ud"], load_dataset(str(folder), valid_from=mode), "500buckets", [2024])[0]
             for mode in ("test", "file")}
    default, own = (specs[m].config["dataset"] for m in ("test", "file"))
    assert "valid_from" not in default["checks"] and set(default["verification"]) == {"train", "test"}
    assert set(default["checks"]) == {"cold", "overlap", "overlap_dropped", "cold_dropped", "users_without_test"}
    assert own["checks"]["valid_from"] == "file" and own["verification"]["valid"] == "unverified"
    assert specs["test"].config_hash != specs["file"].config_hash
    assert comparable_key({"config": specs["test"].config}) != comparable_key({"config": specs["file"].config})
    for mode in ("test", "file"):                    # the command line passes the option through
        assert main(["--dataset", str(folder), "--plan", "--json", "--device", "cpu", "--valid-from", mode]) == 0
        planned = json.loads(capsys.readouterr().out)["runs"][0]
        assert planned["run_id"] == specs[mode].run_id
        assert ("valid_from" in planned["dataset"]) == (mode == "file")


@pytest.mark.skipif(not (SHARED / "lastfm").is_dir(), reason="lastfm is not in ../shared/datasets")
def test_default_configs_keep_the_run_ids_of_the_committed_lastfm_records(tmp_path, capsys):
    """Adding --valid-from changed no default configuration: planning Table 3 on lastfm finds the committed
    record of every run (PEP, CERP and C2F changed for other reasons before this option)."""
    import re

    from lwbench.cli import main
    committed = Path(__file__).resolve().parents[1] / "results" / "lastfm" / "runs"
    (tmp_path / "runs").mkdir()
    for record in committed.iterdir():                 # records and their per-user files, read in place
        (tmp_path / "runs" / record.name).symlink_to(record)
    assert main(["reproduce", "table3", "--datasets", "lastfm", "--data-dir", str(SHARED), "--seeds", "2024",
                 "--methods", "ud,qr,pep,cerp,dpq,mgqe,magprune,legcf,c2f", "--out", str(tmp_path), "--plan"]) == 0
    planned = {m: (int(n), int(found)) for m, n, found in
               re.findall(r"^\s+lastfm\s+(\S+)\s+\S+\s+(\d+) runs\s+(\d+) exist", capsys.readouterr().out, re.M)}
    unchanged = {"ud", "qr", "dpq", "mgqe", "magprune", "legcf"}   # PEP, CERP, C2F: retrained in their new configs
    assert unchanged <= set(planned) and all(planned[m][1] == planned[m][0] for m in unchanged), planned


def test_the_advice_after_dropped_test_pairs_names_the_option_that_dropped_them(tmp_path):
    """Only --overlap drop removed pairs: the message does not suggest --cold keep (cold pairs were kept)."""
    train = read_split(write(tmp_path / "train.txt", "0 0 1\n1 1 2\n2 0 2\n"))
    test = read_split(write(tmp_path / "test.txt", "0 1 2\n1 2 0\n2 0 1\n"))   # one of each user's two is in train
    with pytest.raises(DataError) as caught:
        build_interactions("x", train, test, overlap="drop")
    message = str(caught.value)
    assert "after 3 by --overlap drop removed test pairs, which are training pairs too" in message
    assert "--cold keep" not in message
    cold_test = read_split(write(tmp_path / "cold.txt", "0 2 5\n1 0 5\n2 1 5\n"))   # item 5 has no training pair
    with pytest.raises(DataError, match=r"after 3 by --cold drop removed test pairs: --cold keep keeps cold pairs"):
        build_interactions("x", train, cold_test, cold="drop")
