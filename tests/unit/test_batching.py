import pytest

from kontext_engine.batching import group_compatible


def test_groups_by_key_in_arrival_order_and_caps_size():
    keys = ["a", "b", "a", "a", "b", "a"]
    assert group_compatible(keys, lambda k: k, max_size=2) == [[0, 2], [1, 4], [3, 5]]


def test_single_item_groups_when_max_size_is_one():
    assert group_compatible("aaa", lambda k: k, max_size=1) == [[0], [1], [2]]


def test_rejects_nonpositive_max_size():
    with pytest.raises(ValueError):
        group_compatible("a", lambda k: k, max_size=0)
