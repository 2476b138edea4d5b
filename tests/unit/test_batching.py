"""The one packer behind BatchWriteItem, SendMessageBatch and PutEvents calls: count and byte caps are both
inclusive, order is kept, an item too large for any call travels alone, and the input is read lazily."""

from __future__ import annotations

import itertools

from consumers.core.batching import packed


def sizes(batches):
    return [list(b) for b in batches]


def test_the_count_cap_is_inclusive():
    assert sizes(packed([1] * 7, int, max_count=3, max_bytes=100)) == [[1, 1, 1], [1, 1, 1], [1]]


def test_the_byte_cap_is_inclusive_and_one_more_byte_opens_a_new_call():
    assert sizes(packed([4, 6, 1], int, max_count=10, max_bytes=10)) == [[4, 6], [1]]
    assert sizes(packed([4, 7, 3], int, max_count=10, max_bytes=10)) == [[4], [7, 3]]


def test_an_item_over_the_byte_cap_travels_alone_and_neighbours_are_unaffected():
    assert sizes(packed([2, 50, 2, 2], int, max_count=10, max_bytes=10)) == [[2], [50], [2, 2]]


def test_order_is_kept_and_nothing_is_lost():
    items = list(range(1, 40))
    out = list(packed(items, lambda n: n % 7, max_count=4, max_bytes=9))
    assert [x for b in out for x in b] == items
    assert all(len(b) <= 4 and (sum(n % 7 for n in b) <= 9 or len(b) == 1) for b in out)


def test_empty_input_gives_no_calls():
    assert list(packed([], int, max_count=3, max_bytes=3)) == []


def test_the_input_is_read_lazily():
    first = next(packed(itertools.count(), lambda _: 1, max_count=2, max_bytes=100))
    assert first == [0, 1]
