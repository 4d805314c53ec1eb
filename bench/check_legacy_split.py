"""Check that ``--legacy-split`` reproduces the official LEGCF/C2F loader's validation/test split pair for pair
(docs/protocol.md §1.3).

The official loader seeds numpy's global RNG with the run seed, then for each line of test.txt takes
``list(set(items))`` and draws ``max(1, ceil(n/3))`` of them with ``np.random.choice``. This script replays
that loop as the official code writes it, independently of lwbench, and compares the pairs:

    python bench/check_legacy_split.py /work/shared/datasets/gowalla --seed 2024

It prints the pair counts and exits 0 when validation and test are identical, 1 otherwise.
"""
from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

from lwbench.data.cards import load_dataset


def official_split(test_file: Path, seed: int) -> tuple[set, set]:
    """The official loader's loop (validation and test pairs), reading the file as it does."""
    np.random.seed(seed)
    valid, test = set(), set()
    opener = gzip.open if test_file.suffix == ".gz" else open
    with opener(test_file, "rt") as handle:
        for line in handle.readlines():
            parts = line.strip().split(" ")
            items = list(set([int(i) for i in parts[1:]]))
            user = int(parts[0])
            if len(items) != 0:
                size = max(1, int(np.ceil((1 / 3) * len(items))))
                picked = list(np.random.choice(items, size=size, replace=False))
                valid.update((user, int(i)) for i in picked)
                test.update((user, int(i)) for i in set(items).difference(picked))
    return valid, test


def pairs(matrix) -> set:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a dataset folder holding train.txt[.gz] and test.txt[.gz]")
    parser.add_argument("--seed", type=int, default=2024, help="the run seed (default 2024)")
    args = parser.parse_args(argv)
    test_file = next(p for p in (args.folder / "test.txt.gz", args.folder / "test.txt") if p.is_file())
    valid, test = official_split(test_file, args.seed)
    ours = load_dataset(str(args.folder), legacy_split_seed=args.seed).interactions
    same_valid, same_test = pairs(ours.valid) == valid, pairs(ours.test) == test
    print(f"official: {len(valid):,} valid / {len(test):,} test pairs; lwbench --legacy-split: "
          f"{ours.valid.nnz:,} / {ours.test.nnz:,}; validation identical: {same_valid}; test identical: {same_test}")
    return 0 if same_valid and same_test else 1


if __name__ == "__main__":
    sys.exit(main())
