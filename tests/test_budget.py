"""Budget language (docs/protocol.md §5.5) and parameter-count conventions."""
import pytest

from lwbench.budget import BudgetError, ParamCount, parse_budget

CARDS = {"gowalla": (29858, 40981, 205678), "yelp2020": (71135, 45063, 296396),
         "amazon-book": (52643, 91599, 352484)}


@pytest.mark.parametrize("name", CARDS)
def test_500buckets_matches_the_paper_budget(name):
    n_users, n_items, expected = CARDS[name]
    assert parse_budget("500buckets", n_users, n_items) == expected


def test_forms():
    n_users, n_items = 29858, 40981  # N = 70,839
    assert parse_budget("205678", n_users, n_items) == 205678
    assert parse_budget("0.21m", n_users, n_items) == 210000
    assert parse_budget("250k", n_users, n_items) == 250000
    assert parse_budget("2.3%", n_users, n_items) == int(0.023 * 70839 * 128)
    assert parse_budget("800KB", n_users, n_items) == 200000
    assert parse_budget("1MiB", n_users, n_items) == 2**20 // 4
    assert parse_budget("300buckets", n_users, n_items, dim=64) == 300 * 64 + 2 * 70839
    assert parse_budget(" 500Buckets ", n_users, n_items) == 205678
    assert parse_budget("none", n_users, n_items) is None


@pytest.mark.parametrize("text", ["lots", "5 buckets x", "-3", "0", "0%", "12parsecs", ""])
def test_bad_budget_lists_accepted_forms(text):
    with pytest.raises(BudgetError) as info:
        parse_budget(text, 100, 100)
    assert "buckets" in str(info.value) or "positive" in str(info.value)


def test_storage_bytes_prices_values_indices_and_codes():
    count = ParamCount(table3=10, float_values=10, int_indices=5, code_bits=12)
    assert count.storage_bytes == 40 + 20 + 2
    assert count.to_dict()["storage_bytes"] == 62
