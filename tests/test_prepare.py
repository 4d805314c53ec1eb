"""``lwbench prepare``: the three input formats give the same folder for the same pairs, the splits follow
their rules, filters work, and bad input is a one-line error naming file, line and column that leaves
nothing behind (issue 10)."""
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lwbench.cli import main
from lwbench.data.cards import load_dataset
from lwbench.data.interactions import DataError, read_split
from lwbench.data.prepare import PrepareOptions, prepare


def card_prints(folder: Path) -> tuple[str, str]:
    text = (folder / "card.toml").read_text()
    return tuple(line.split('"')[1] for line in text.splitlines() if "_sha256" in line)


def frame(raw) -> pd.DataFrame:
    return pd.DataFrame({"user_id": raw.users, "item_id": raw.items})


def test_csv_inter_and_lightgcn_with_the_same_pairs_give_the_same_fingerprints(toy_dir, tmp_path):
    from_text = prepare(toy_dir, tmp_path / "a")
    train, test = read_split(toy_dir / "train.txt"), read_split(toy_dir / "test.txt.gz")
    rows = frame(train).sample(frac=1.0, random_state=0)               # row order does not matter
    rows.to_csv(tmp_path / "train.csv", index=False)
    frame(test).to_csv(tmp_path / "test.csv", index=False)
    from_csv = prepare(tmp_path / "train.csv", tmp_path / "b", PrepareOptions(test=str(tmp_path / "test.csv")))
    inter = frame(train).rename(columns={"user_id": "user_id:token", "item_id": "item_id:token"})
    inter.to_csv(tmp_path / "train.inter", sep="\t", index=False)
    frame(test).rename(columns={"user_id": "user_id:token", "item_id": "item_id:token"}).to_csv(
        tmp_path / "test.inter", sep="\t", index=False)
    from_inter = prepare(tmp_path / "train.inter", tmp_path / "c", PrepareOptions(test=str(tmp_path / "test.inter")))
    assert from_text["train_sha256"] == from_csv["train_sha256"] == from_inter["train_sha256"]
    assert from_text["test_sha256"] == from_csv["test_sha256"] == from_inter["test_sha256"]
    assert card_prints(tmp_path / "a") == card_prints(tmp_path / "b")
    for folder in ("a", "b", "c"):   # byte-identical files, and the prepared folder loads verified
        assert (tmp_path / folder / "train.txt.gz").read_bytes() == (tmp_path / "a" / "train.txt.gz").read_bytes()
    loaded = load_dataset(str(tmp_path / "b"))
    assert loaded.verification == {"train": "fingerprint", "test": "fingerprint"}


def test_string_ids_are_remapped_with_mapping_files(tmp_path):
    (tmp_path / "r.tsv").write_text("item\tuser\nb\tu9\na\tu10\nb\tu10\nc\tu9\nd\tu9\na\tu11\nc\tu11\n")
    prepare(tmp_path / "r.tsv", tmp_path / "o", PrepareOptions(test_fraction=0.5))
    assert (tmp_path / "o" / "user_list.txt").read_text() == "org_id remap_id\nu10 0\nu11 1\nu9 2\n"
    assert (tmp_path / "o" / "item_list.txt").read_text().splitlines()[1:] == ["a 0", "b 1", "c 2", "d 3"]


def timed_rows(n_users=20, per_user=10, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(50, per_user, replace=False) for _ in range(n_users)])
    return pd.DataFrame({"user": [f"u{u}" for u in users], "item": [f"i{i}" for i in items],
                         "rating": rng.integers(1, 6, len(users)), "timestamp": rng.permutation(len(users))})


def test_the_temporal_split_puts_each_users_latest_pairs_in_test(tmp_path):
    rows = timed_rows()
    rows.to_csv(tmp_path / "r.csv", index=False)
    prepare(tmp_path / "r.csv", tmp_path / "o", PrepareOptions(split="temporal", test_fraction=0.3))
    users = pd.read_csv(tmp_path / "o" / "user_list.txt", sep=" ")["org_id"].tolist()
    items = pd.read_csv(tmp_path / "o" / "item_list.txt", sep=" ")["org_id"].tolist()
    test = read_split(tmp_path / "o" / "test.txt.gz")
    got = {(users[u], items[i]) for u, i in zip(test.users, test.items)}
    latest = rows.sort_values("timestamp").groupby("user").tail(3)
    assert got == set(zip(latest["user"], latest["item"]))


def test_the_random_split_follows_its_seed_and_fraction(tmp_path):
    timed_rows().to_csv(tmp_path / "r.csv", index=False)
    stats = [prepare(tmp_path / "r.csv", tmp_path / f"o{k}", PrepareOptions(seed=seed, test_fraction=0.3))
             for k, seed in enumerate((1, 1, 2))]
    assert all(s["test_interactions"] == 60 for s in stats)
    assert stats[0]["test_sha256"] == stats[1]["test_sha256"] != stats[2]["test_sha256"]


def test_rating_threshold_dedup_and_k_core(tmp_path):
    rows = pd.DataFrame({"user_id": ["a", "a", "a", "a", "b", "b", "b", "c", "c", "c", "c"],
                         "item_id": ["x", "y", "z", "x", "x", "y", "z", "x", "y", "z", "w"],
                         "rating": [5, 4, 5, 5, 5, 4, 1, 5, 5, 4, 5]})
    rows.to_csv(tmp_path / "r.csv", index=False)
    stats = prepare(tmp_path / "r.csv", tmp_path / "o",
                    PrepareOptions(min_rating=4, user_core=3, item_core=2, test_fraction=0.67))
    # rating >= 4 drops (b, z); b keeps 2 pairs < 3 and goes; w has one user and goes; a, c keep x, y, z
    assert (stats["n_users"], stats["n_items"], stats["train_interactions"] + stats["test_interactions"]) == (2, 3, 6)


@pytest.mark.parametrize("text, options, message", [
    ("uid,product\n1,2\n", {}, r"r\.csv: no item column \(header: uid, product; .*--item-col"),
    ("user,item\n1,2\n", {"item_col": "sku"}, r"no column 'sku' .*fix --item-col"),
    ("user,item\n1,2\n", {"min_rating": 3}, r"no rating column .*--rating-col"),
    ("user,item,rating\n1,2,5\n2,3,x\n", {"min_rating": 3}, r"r\.csv:3: column 'rating' holds 'x', not a number"),
    ("user,item\n1,2\n,3\n", {}, r"r\.csv:3: column 'user' is empty"),
    ("user,item\n", {}, r"no rows after the header"),
    ("user,item,rating\n1,2,1\n2,3,2\n", {"min_rating": 3}, r"nothing left after filtering"),
    ("user,item\n1,2\n1,3\n2,3\n", {"user_core": 5}, r"nothing left after filtering .*--user-core"),
    ("user,item,timestamp\n1,2,3\n", {"split": "temporal", "time_col": "when"}, r"no column 'when'"),
])
def test_bad_input_is_one_clear_error_and_leaves_nothing(tmp_path, text, options, message):
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        prepare(tmp_path / "r.csv", tmp_path / "out", PrepareOptions(**options))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"], "a failed preparation leaves no folder"


def test_a_failing_check_after_writing_leaves_nothing(tmp_path):
    """Every user with one test pair (leave-one-out) fails the loader's check on the written folder."""
    (tmp_path / "r.csv").write_text("user,item\n" + "".join(f"{u},{i}\n" for u in range(5) for i in range(2)))
    with pytest.raises(DataError, match=r"out not written: .*out/test\.txt\.gz: 5 of 5 test users have a single"):
        prepare(tmp_path / "r.csv", tmp_path / "out", PrepareOptions(test_fraction=0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_an_existing_folder_is_never_overwritten(tmp_path, toy_dir):
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match="already exists"):
        prepare(toy_dir, tmp_path / "out")


def test_a_changed_prepared_file_fails_its_card(tmp_path, toy_dir):
    prepare(toy_dir, tmp_path / "o")
    train = tmp_path / "o" / "train.txt.gz"
    text = gzip.decompress(train.read_bytes()).decode().replace("\n", " 199\n", 1)
    train.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataError, match=r"train\.txt\.gz: 3414 distinct train pairs, but the o card says 3413"):
        load_dataset(str(tmp_path / "o"))


def test_the_command_prints_counts_and_the_folder_runs(tmp_path, toy_dir, capsys):
    assert main(["prepare", str(toy_dir), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "300 users, 200 items" in printed and "cold items" in printed and "fingerprints: train" in printed
    assert main(["--dataset", str(tmp_path / "o"), "--plan", "--device", "cpu"]) == 0
    assert main(["prepare", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "p")]) == 2


SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.mark.skipif(not (SHARED / "lastfm").is_dir(), reason="lastfm is not in ../shared/datasets")
def test_preparing_lastfm_keeps_its_ids_and_fingerprints(tmp_path):
    """Dense 0-based ids map to themselves, so the prepared folder has the card's fingerprints, cold items
    included (the id range spans train and test)."""
    from lwbench.data.cards import get_card
    stats = prepare(SHARED / "lastfm", tmp_path / "lastfm")
    card = get_card("lastfm")
    assert (stats["train_sha256"], stats["test_sha256"]) == (card.fingerprints["train"], card.fingerprints["test"])
    assert (stats["n_users"], stats["n_items"], stats["cold_items"]) == (1885, 17388, 2247)


def test_cold_and_overlap_options_reach_the_plan(tmp_path, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"{u} {u % 5} {(u + 1) % 5} {(u + 2) % 5}\n" for u in range(20)))
    (folder / "test.txt").write_text("".join(f"{u} {(u + 3) % 5} {(u + 4) % 5} 9\n" for u in range(20)))
    assert main(["--dataset", str(folder), "--plan", "--json", "--device", "cpu", "--cold", "drop"]) == 0
    plan = capsys.readouterr().out
    assert '"cold_items": 5' in plan and '"cold_dropped": 20' in plan and '"cold": "drop"' in plan


def test_a_single_lightgcn_file_and_an_inter_file_are_split(toy_dir, tmp_path):
    stats = prepare(toy_dir / "train.txt", tmp_path / "a", PrepareOptions(test_fraction=0.25))
    whole = read_split(toy_dir / "train.txt").n_pairs
    assert stats["train_interactions"] + stats["test_interactions"] == whole and stats["test_interactions"] > 0
    timed_rows().rename(columns={"user": "user_id:token", "item": "item_id:token", "rating": "rating:float",
                                 "timestamp": "timestamp:float"}).to_csv(tmp_path / "r.inter", sep="\t", index=False)
    inter = prepare(tmp_path / "r.inter", tmp_path / "b", PrepareOptions(split="temporal", test_fraction=0.3))
    timed_rows().to_csv(tmp_path / "r.csv", index=False)
    csv = prepare(tmp_path / "r.csv", tmp_path / "c", PrepareOptions(split="temporal", test_fraction=0.3))
    assert (inter["train_sha256"], inter["test_sha256"]) == (csv["train_sha256"], csv["test_sha256"])
