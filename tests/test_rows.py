"""dexed_data.rows: distinct rows equal numpy's own ``np.unique(axis=0)``, groups keep their lowest row."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dexed_data.rows import count_unique_rows, group_rows, unique_rows

small_tables = st.integers(0, 40).flatmap(
    lambda n: arrays(np.uint8, (n, 3), elements=st.integers(0, 2)))


@settings(max_examples=60, deadline=None)
@given(small_tables)
def test_unique_rows_is_numpys_unique_over_rows(a):
    first, inverse = unique_rows(a)
    if len(a):
        _, want_first, want_inverse = np.unique(a, axis=0, return_index=True, return_inverse=True)
        assert first.tolist() == want_first.tolist()
        assert inverse.tolist() == want_inverse.ravel().tolist()
    else:
        assert first.size == inverse.size == 0
    assert count_unique_rows(a) == len({tuple(r) for r in a.tolist()})


@settings(max_examples=60, deadline=None)
@given(small_tables, st.data())
def test_group_rows_points_to_the_lowest_equal_valid_row(a, data):
    valid = np.array(data.draw(st.lists(st.booleans(), min_size=len(a), max_size=len(a))), bool)
    groups = group_rows(a, valid)
    assert groups.dtype == np.int32
    for i, row in enumerate(a.tolist()):
        if not valid[i]:
            assert groups[i] == -1
        else:
            assert groups[i] == min(j for j in range(len(a)) if valid[j] and a[j].tolist() == row)


def test_rows_of_wider_integers():
    a = np.array([[300, 1], [1, 300], [300, 1]], np.int64)   # equal bytes ⇔ equal values
    assert group_rows(a).tolist() == [0, 1, 0]
