"""``lwbench prepare``: the three input formats give the same folder for the same pairs, the splits follow
their rules, filters work, and bad input is a one-line error naming file, line and column that leaves
nothing behind (issue 10)."""
import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomllib

from lwbench.cli import main
from lwbench.data.cards import load_dataset
from lwbench.data.interactions import DataError, read_split
from lwbench.data.prepare import PrepareOptions, prepare, read_id_map


def card_prints(folder: Path) -> tuple[str, str]:
    prints = tomllib.loads((folder / "card.toml").read_text())["fingerprints"]
    return prints["train_sha256"], prints["test_sha256"]


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
    assert (tmp_path / "o" / "user_list.tsv").read_text() == "org_id\tremap_id\nu10\t0\nu11\t1\nu9\t2\n"
    assert (tmp_path / "o" / "item_list.tsv").read_text().splitlines()[1:] == ["a\t0", "b\t1", "c\t2", "d\t3"]


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
    users = read_id_map(tmp_path / "o" / "user_list.tsv")
    items = read_id_map(tmp_path / "o" / "item_list.tsv")
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
    ("user,item,rating\n1,2,5\n2,3,x\n", {"min_rating": 3},
     r"r\.csv: 1 bad line; .*\n  line 3: column 'rating' holds 'x', not a number$"),
    ("user,item\n1,2\n,3\n", {}, r"r\.csv: 1 bad line; .*\n  line 3: no user id \(column 'user' is empty\)$"),
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


def test_a_failing_check_after_writing_leaves_nothing(tmp_path, toy_dir, monkeypatch):
    """A check of the written folder that fails names the folder asked for and leaves nothing behind."""
    import lwbench.data.prepare as module

    def failing(name, train, test, **kwargs):
        raise DataError(f"{train.path}: planted failure")
    monkeypatch.setattr(module, "build_interactions", failing)
    with pytest.raises(DataError, match=r"out not written: .*out/train\.txt\.gz: planted failure"):
        prepare(toy_dir, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


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


@pytest.mark.skipif(not (SHARED / "lastfm").is_dir(), reason="lastfm is not in ../shared/datasets")
def test_upstream_lastfm_lines_are_refused_as_lightgcn_and_prepare_as_the_card_says(tmp_path):
    """Upstream keeps one 'user item 1' line per pair. Read as LightGCN text, the 1 would become an item
    of every user; the error says how to convert, and that conversion gives the card's fingerprints."""
    from lwbench.data.cards import get_card
    lines = {}
    for split in ("train", "test"):
        raw = read_split(SHARED / "lastfm" / f"{split}.txt.gz")
        lines[split] = "".join(f"{u} {i} 1\n" for u, i in zip(raw.users.tolist(), raw.items.tolist(), strict=True))
        (tmp_path / f"{split}.txt").write_text(lines[split])
        (tmp_path / f"{split}.csv").write_text("user item rating\n" + lines[split])
    with pytest.raises(DataError, match=r"train\.txt: every line has 3 fields and users repeat .*header line 'user item "
                                        r"rating', name the file \.csv and pass --sep ' '"):
        prepare(tmp_path / "train.txt", tmp_path / "wrong", PrepareOptions(test=str(tmp_path / "test.txt")))
    stats = prepare(tmp_path / "train.csv", tmp_path / "lastfm", PrepareOptions(test=str(tmp_path / "test.csv"),
                                                                               sep=" "))
    card = get_card("lastfm")
    assert (stats["train_sha256"], stats["test_sha256"]) == (card.fingerprints["train"], card.fingerprints["test"])


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


# --- issue 20: every bad input a one-line error that names what to fix, or correct behaviour ------------

def rows_csv(path: Path, n_users: int = 30, per_user: int = 8, header: str = "user,item,rating") -> Path:
    rng = np.random.default_rng(1)
    lines = [header] + [f"u{u},i{i},{1 + (u + i) % 5}" for u in range(n_users)
                        for i in rng.choice(40, per_user, replace=False)]
    path.write_text("\n".join(lines) + "\n")
    return path


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_an_empty_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty.csv").write_bytes(b"")
    err = one_line_error(capsys, ["prepare", str(tmp_path / "empty.csv"), "--out", str(tmp_path / "o")])
    assert "empty.csv: the file is empty (0 bytes); expected a header line" in err
    (tmp_path / "blank.tsv").write_text("\n  \n\n")
    with pytest.raises(DataError, match=r"blank\.tsv: the file holds only blank lines"):
        prepare(tmp_path / "blank.tsv", tmp_path / "o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.tsv", "empty.csv"]


def test_a_latin1_file_names_line_and_byte_and_prepares_with_its_encoding(tmp_path, capsys):
    text = rows_csv(tmp_path / "plain.csv").read_text().replace("i3,", "café,")
    (tmp_path / "r.csv").write_bytes(text.encode("latin-1"))
    line = next(k for k, row in enumerate(text.splitlines(), start=1) if "café" in row)
    err = one_line_error(capsys, ["prepare", str(tmp_path / "r.csv"), "--out", str(tmp_path / "o")])
    column = text.splitlines()[line - 1].index("é") + 1
    assert f"r.csv:{line}: byte 0xe9 at byte {column} of the line is not valid utf-8" in err
    assert "--encoding latin-1" in err
    assert main(["prepare", str(tmp_path / "r.csv"), "--out", str(tmp_path / "o"), "--encoding", "latin-1"]) == 0
    assert "café" in read_id_map(tmp_path / "o" / "item_list.tsv")
    assert tomllib.loads((tmp_path / "o" / "card.toml").read_text())["prepared"]["options"]["encoding"] == "latin-1"


NASTY_IDS = ["plain", "with space", " lead and trail ", "tab\there", "new\nline", "cr\rhere", 'quote"inside',
             '"quoted"', "comma,inside", "NA", "null", "0", "007", "ünïcødé", "日本語", "emoji 🎉", "back\\slash",
             "#hash", "=1+1", "-"]


def test_id_maps_round_trip_any_id(tmp_path):
    """Ids holding spaces, tabs, newlines, quotes or any unicode come back exactly, pair for pair."""
    import csv
    rng = np.random.default_rng(0)
    pairs = {(u, i) for u in NASTY_IDS for i in rng.choice(NASTY_IDS, 8, replace=False).tolist()}
    with open(tmp_path / "r.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user", "item"])
        writer.writerows(sorted(pairs))
    stats = prepare(tmp_path / "r.csv", tmp_path / "o")
    users, items = read_id_map(tmp_path / "o" / "user_list.tsv"), read_id_map(tmp_path / "o" / "item_list.tsv")
    assert sorted(users) == sorted(NASTY_IDS) and (stats["n_users"], len(users)) == (len(NASTY_IDS),) * 2
    got = set()
    for split in ("train", "test"):
        raw = read_split(tmp_path / "o" / f"{split}.txt.gz")
        got |= {(users[u], items[i]) for u, i in zip(raw.users.tolist(), raw.items.tolist())}
    assert got == pairs
    with open(tmp_path / "o" / "item_list.tsv", newline="", encoding="utf-8") as handle:   # any TSV reader
        assert [row[0] for row in csv.reader(handle, delimiter="\t")][1:] == items


def test_an_unwritable_out_is_a_one_line_error_naming_it(tmp_path, capsys, monkeypatch, toy_dir):
    import errno

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))
    monkeypatch.setattr(Path, "mkdir", read_only)
    err = one_line_error(capsys, ["prepare", str(toy_dir), "--out", str(tmp_path / "ro" / "o")])
    assert f"cannot write {tmp_path / 'ro' / 'o'}: Read-only file system; choose another --out" in err


def test_prepared_folders_get_the_permissions_of_the_umask(tmp_path, toy_dir):
    from lwbench.files import UMASK
    prepare(toy_dir, tmp_path / "o")
    assert (tmp_path / "o").stat().st_mode & 0o777 == 0o777 & ~UMASK
    for path in (tmp_path / "o").iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~UMASK, path


HOLDER = """
import sys, time
import lwbench.data.prepare as module
from pathlib import Path

def hold(*args, **kwargs):
    Path(sys.argv[3]).write_text("claimed")
    time.sleep(600)
module._read_parts = hold
module.prepare(sys.argv[1], sys.argv[2])
"""


def holding_process(tmp_path, source, out):
    """A real ``prepare`` of ``out`` in another process, stopped once it holds its temporary folder."""
    import subprocess
    import sys
    import time
    signal = tmp_path / "claimed"
    root = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "PYTHONPATH": str(root)}
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(source), str(out), str(signal)], env=env)
    deadline = time.monotonic() + 60
    while not signal.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the holding process did not start"
        time.sleep(0.05)
    return process


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_second_prepare_of_one_out_is_refused_and_a_killed_ones_folder_is_cleaned_up(tmp_path, toy_dir, capsys,
                                                                                         caplog):
    import signal
    out = tmp_path / "data" / "o"
    first = holding_process(tmp_path, toy_dir, out)
    try:
        err = one_line_error(capsys, ["prepare", str(toy_dir), "--out", str(out)])
        assert f"{out}: is being prepared by another command (pid {first.pid}" in err
        (temporary,) = hidden(out.parent)
        assert temporary.startswith(".o.prepare-")
        with pytest.raises(DataError, match="temporary folder of an unfinished or killed `lwbench prepare`"):
            load_dataset(str(out.parent / temporary))        # never mistaken for a dataset
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert hidden(out.parent) == [temporary], "kill -9 leaves the temporary folder"
    assert main(["prepare", str(toy_dir), "--out", str(out)]) == 0          # the next prepare cleans up
    assert hidden(out.parent) == [] and (out / "card.toml").is_file()
    assert f"removed {out.parent / temporary}" in caplog.text


def test_a_later_prepare_loses_and_a_publish_race_is_a_clear_error(tmp_path, toy_dir, monkeypatch):
    import fcntl
    import os
    import time

    import lwbench.data.prepare as module
    from lwbench.data.output_folder import LOCK_FILE
    out = tmp_path / "o"
    later = tmp_path / f".o.prepare-{os.getpid()}-{time.time_ns() + 10**12}"   # live, but started after us
    later.mkdir()
    with open(later / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prepare(toy_dir, out)                                                  # the earlier command wins
    assert (out / "card.toml").is_file() and later.is_dir()

    real = module._filter_and_split

    def racing(*args, **kwargs):                                               # another command finishes first
        (tmp_path / "p").mkdir()
        (tmp_path / "p" / "card.toml").write_text("name = 'p'\n")
        return real(*args, **kwargs)
    monkeypatch.setattr(module, "_filter_and_split", racing)
    with pytest.raises(DataError, match=r"p: already exists \(another command prepared it meanwhile\)"):
        prepare(toy_dir, tmp_path / "p")
    assert not [p for p in hidden(tmp_path) if p.startswith(".p.")]


def test_an_old_temporary_folder_without_a_lock_is_cleaned_up_even_where_its_pid_is_reused(tmp_path, toy_dir):
    """A command killed between making its temporary folder and locking it leaves a folder without a lock file;
    its pid may since belong to another process (here: this one). Past the few starting seconds the folder is
    a killed command's and is removed; a young one is left alone (its command may be starting)."""
    import os
    import time

    from lwbench.data.output_folder import STARTING_SECONDS
    out = tmp_path / "o"
    young = tmp_path / f".o.prepare-{os.getpid()}-{time.time_ns() - 10**9}"      # started before us, still starting
    young.mkdir()
    with pytest.raises(DataError, match="is being prepared by another command"):
        prepare(toy_dir, out)
    past = time.time() - 2 * STARTING_SECONDS
    os.utime(young, (past, past))
    prepare(toy_dir, out)
    assert (out / "card.toml").is_file() and not young.exists()


MESSY = """user,item,rating
u1,i1,5
u1,i2
u1,i3,4,extra
"u 2",i1,5
"u
3",i2,4

u3,,5
u4,i1,x
u4,i2,
u5,i3,5
u5
u6,i1,5,6,7
u6,i2,one
u7,i1,2
u7,i2,3,
,i3,5
u8,i1,1,2
u9,i1,?
u9,i2,5
"""


def test_bad_lines_are_listed_with_line_numbers_and_what_is_wrong(tmp_path, capsys):
    (tmp_path / "r.csv").write_text(MESSY)
    with pytest.raises(DataError) as caught:
        prepare(tmp_path / "r.csv", tmp_path / "o", PrepareOptions(min_rating=1))
    head, *lines = str(caught.value).splitlines()
    assert head.endswith("r.csv: 12 bad lines (the first 10 below); fix them, or leave them out with "
                         "--on-bad-lines skip (or warn, which lists them):")
    assert lines == [
        "  line 3: 2 fields, expected 3 (user, item, rating)",
        "  line 4: 4 fields, expected 3 (user, item, rating)",
        "  line 9: no item id (column 'item' is empty)",          # a quoted id spans lines 6-7; line 8 is blank
        "  line 10: column 'rating' holds 'x', not a number",
        "  line 11: column 'rating' is empty",
        "  line 13: 1 field, expected 3 (user, item, rating)",
        "  line 14: 5 fields, expected 3 (user, item, rating)",
        "  line 15: column 'rating' holds 'one', not a number",
        "  line 17: 4 fields, expected 3 (user, item, rating)",
        "  line 18: no user id (column 'user' is empty)",
    ]
    assert not (tmp_path / "o").exists()


def test_bad_lines_can_be_skipped_or_warned_and_every_count_is_printed(tmp_path, capsys, caplog):
    rows = rows_csv(tmp_path / "good.csv").read_text().splitlines()
    rows[5:5] = ["u1,i1", "u2,i9,5,5", "u3,,4"]                  # three bad lines: 6, 7, 8
    rows += [r for r in rows[1:5] if int(r.split(",")[2]) >= 2][:3]   # three duplicate pairs that pass the filter
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    argv = ["prepare", str(tmp_path / "r.csv"), "--min-rating", "2", "--user-core", "3"]
    assert main([*argv, "--out", str(tmp_path / "a"), "--on-bad-lines", "skip"]) == 0
    printed = capsys.readouterr().out
    good = [r.split(",") for r in rows[1:] if r.count(",") == 2 and ",," not in r]
    below = sum(int(r[2]) < 2 for r in good)
    assert f"read {len(rows) - 1:,} rows (3 bad lines left out); 3 duplicate pairs collapsed" in printed
    assert f"filters removed {below:,} rows rated below 2 (--min-rating), 0 pairs by the 3/0 user/item k-core" \
        in printed and "cold pairs" in printed and "overlapping pairs" in printed
    assert main([*argv, "--out", str(tmp_path / "b"), "--on-bad-lines", "warn"]) == 0
    assert "3 bad lines left out (--on-bad-lines warn):\n  line 6: 2 fields, expected 3" in caplog.text
    assert "  line 8: no item id" in caplog.text
    card = tomllib.loads((tmp_path / "a" / "card.toml").read_text())
    assert card["prepared"]["source_sha256"] == __import__("hashlib").sha256((tmp_path / "r.csv").read_bytes()) \
        .hexdigest()
    assert card["prepared"]["options"]["min_rating"] == 2 and card["prepared"]["options"]["on_bad_lines"] == "skip"
    assert card["prepared"]["counts"]["bad_lines_skipped"] == 3 and card["prepared"]["counts"]["rows_read"] == \
        len(rows) - 1
    assert load_dataset(str(tmp_path / "a")).verification == {"train": "fingerprint", "test": "fingerprint"}


def test_five_pairs_per_user_gets_advice_that_works(tmp_path):
    """With five pairs a user gets round(5 x 0.2) = 1 test pair, which validation takes: the advice is the
    fraction that leaves a test pair, computed from the data, and it works."""
    rows_csv(tmp_path / "r.csv", n_users=40, per_user=5)
    with pytest.raises(DataError, match=r"every test user has a single test pair.* Run again with --test-fraction "
                                        r"0\.3 \(users have 5 pairs at the median.*or keep --test-fraction 0\.2 and "
                                        r"add --valid-fraction 0\.2") as caught:
        prepare(tmp_path / "r.csv", tmp_path / "o")
    assert "--test-fraction 0.2`" not in str(caught.value)
    assert not (tmp_path / "o").exists()
    stats = prepare(tmp_path / "r.csv", tmp_path / "a", PrepareOptions(test_fraction=0.3))
    assert stats["test_interactions"] == 80 and load_dataset(str(tmp_path / "a")).interactions.test.nnz == 40
    three_way = prepare(tmp_path / "r.csv", tmp_path / "b", PrepareOptions(valid_fraction=0.2))
    assert (three_way["train_interactions"], three_way["valid_interactions"], three_way["test_interactions"]) == \
        (120, 40, 40)
    loaded = load_dataset(str(tmp_path / "b"), valid_from="file")
    assert loaded.verification["valid"] == "fingerprint" and loaded.interactions.test.nnz == 40


def test_the_advised_fraction_is_the_smallest_that_works():
    from lwbench.data.prepare import advised_test_fraction, test_pair_counts
    for n in ([5] * 9, [4, 9, 30], [3, 100], [6, 6, 7], [2, 2, 11]):
        n = np.array(n)
        fraction = advised_test_fraction(n)
        assert (test_pair_counts(n[n >= 3], fraction) >= 2).all()
        assert not (test_pair_counts(n[n >= 3], fraction - 0.01) >= 2).all()
    assert advised_test_fraction(np.array([1, 2, 2])) is None


def test_cold_drop_that_empties_test_says_so(tmp_path):
    (tmp_path / "train.csv").write_text("user,item\n" + "".join(f"u{u},i{i}\n" for u in range(5) for i in range(3)))
    (tmp_path / "test.csv").write_text("user,item\n" + "".join(f"u{u},new{u}\n" for u in range(5)))
    options = PrepareOptions(test=str(tmp_path / "test.csv"), cold="drop")
    with pytest.raises(DataError, match=r"all 5 test pairs were dropped as cold \(--cold drop.*--cold keep"):
        prepare(tmp_path / "train.csv", tmp_path / "o", options)
    (tmp_path / "test2.csv").write_text("user,item\nu0,i0\nu1,i1\n")
    with pytest.raises(DataError, match=r"test2\.csv: 2 test pairs are also training pairs \(e\.g\. user 'u0', item "
                                        r"'i0'\).*--overlap drop"):
        prepare(tmp_path / "train.csv", tmp_path / "o", PrepareOptions(test=str(tmp_path / "test2.csv")))


def test_a_given_split_can_get_a_validation_file_and_temporal_validation_precedes_test(tmp_path):
    rows = timed_rows(per_user=10)
    rows.to_csv(tmp_path / "r.csv", index=False)
    stats = prepare(tmp_path / "r.csv", tmp_path / "o",
                    PrepareOptions(split="temporal", test_fraction=0.2, valid_fraction=0.2))
    assert (stats["train_interactions"], stats["valid_interactions"], stats["test_interactions"]) == (120, 40, 40)
    users, items = read_id_map(tmp_path / "o" / "user_list.tsv"), read_id_map(tmp_path / "o" / "item_list.tsv")
    valid = read_split(tmp_path / "o" / "valid.txt.gz")
    got = {(users[u], items[i]) for u, i in zip(valid.users, valid.items)}
    ranked = rows.sort_values("timestamp").groupby("user")
    assert got == set(zip(*[ranked.nth([-4, -3])[c] for c in ("user", "item")]))
    card = tomllib.loads((tmp_path / "o" / "card.toml").read_text())
    assert card["valid_interactions"] == 40 and "valid_sha256" in card["fingerprints"]


def test_a_leave_one_out_given_split_is_advised_a_validation_file_that_works(tmp_path):
    (tmp_path / "train.csv").write_text("user,item\n" + "".join(f"u{u},i{(u + k) % 9}\n" for u in range(12)
                                                               for k in range(4)))
    (tmp_path / "test.csv").write_text("user,item\n" + "".join(f"u{u},i{(u + 5) % 9}\n" for u in range(12)))
    options = PrepareOptions(test=str(tmp_path / "test.csv"))
    with pytest.raises(DataError, match=r"every test user has a single test pair.*Add --valid-fraction 0\.1"):
        prepare(tmp_path / "train.csv", tmp_path / "o", options)
    stats = prepare(tmp_path / "train.csv", tmp_path / "o", PrepareOptions(test=options.test, valid_fraction=0.1))
    assert (stats["train_interactions"], stats["valid_interactions"], stats["test_interactions"]) == (36, 12, 12)
    assert load_dataset(str(tmp_path / "o"), valid_from="file").interactions.test.nnz == 12


def test_a_temporal_split_of_lightgcn_text_is_an_error_not_a_random_split(toy_dir, tmp_path):
    """LightGCN text has no timestamps: --split temporal used to draw a random split while the card said
    temporal."""
    with pytest.raises(DataError, match=r"train\.txt: --split temporal takes each user's latest pairs by time as "
                                        r"the test pairs, but LightGCN text has no timestamps; use --split random"):
        prepare(toy_dir / "train.txt", tmp_path / "o", PrepareOptions(split="temporal"))
    assert not (tmp_path / "o").exists()
    # a folder holds its split: temporal applies only to a validation file drawn from it
    with pytest.raises(DataError, match=r"as the validation pairs \(--valid-fraction\), but LightGCN text has no "
                                        r"timestamps"):
        prepare(toy_dir, tmp_path / "v", PrepareOptions(split="temporal", valid_fraction=0.1))
    assert main(["prepare", str(toy_dir / "train.txt"), "--out", str(tmp_path / "c"), "--split", "temporal"]) == 2
    prepare(toy_dir, tmp_path / "f", PrepareOptions(split="temporal"))   # nothing drawn: nothing to order


def test_the_line_scan_counts_quoted_files_in_batches_with_the_same_line_numbers(tmp_path, monkeypatch):
    """From the first quote on, lines are read one by one; their records are added to the scan in batches (once
    per 100,000 records and at the end), not one numpy call per line, which made a quoted file ~70x slower to scan.
    A record after a quoted field that spans lines is numbered from its own first line."""
    from lwbench.data import line_scan
    text = 'user,item,note\nu1,i1,"two\nlines"\nu2,i2,x\nu3,i3,x,extra\n\nu4,i4,"a,b"\nu5,i5\n' + \
        "".join(f"u{k},i{k},x\n" for k in range(6, 1006))
    (tmp_path / "q.csv").write_text(text)
    calls = []
    original = line_scan._Scanner.add
    monkeypatch.setattr(line_scan._Scanner, "add", lambda self, *args: calls.append(1) or original(self, *args))
    scan = line_scan.scan_lines(tmp_path / "q.csv", ",", "utf-8")
    assert len(calls) == 1                                    # one batch: header and 1,005 records
    assert scan.n_records == 1005 and scan.bad_records.tolist() == [2, 4] and scan.bad_fields.tolist() == [4, 2]
    lines = {record: scan.line_of(record) for record in (0, 1, 2, 3, 4, 5, 1004)}
    assert lines == {0: 2, 1: 4, 2: 5, 3: 7, 4: 8, 5: 9, 1004: 1008}
    monkeypatch.setattr(line_scan, "SCAN_BATCH", 2)           # batches of 2 records: the same scan
    small = line_scan.scan_lines(tmp_path / "q.csv", ",", "utf-8")
    assert small.n_records == 1005 and small.bad_records.tolist() == [2, 4]
    assert {record: small.line_of(record) for record in lines} == lines
    with pytest.raises(DataError, match=r"\n  line 5: 4 fields, expected 3 \(user, item, note\)\n  line 8: 2 fields"):
        prepare(tmp_path / "q.csv", tmp_path / "o")


def test_the_fractions_are_checked_together_only_when_a_split_is_drawn(toy_dir, tmp_path):
    """A folder holds its split: --test-fraction is unused, so it and --valid-fraction may sum to 1 or more."""
    stats = prepare(toy_dir, tmp_path / "o", PrepareOptions(test_fraction=0.9, valid_fraction=0.2))
    assert stats["valid_file"]
    with pytest.raises(DataError, match=r"--test-fraction 0\.9 \+ --valid-fraction 0\.2 leave no training pairs"):
        prepare(toy_dir / "train.txt", tmp_path / "p", PrepareOptions(test_fraction=0.9, valid_fraction=0.2))
