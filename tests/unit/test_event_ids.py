import uuid

from hypothesis import given
from hypothesis import strategies as st

from events import deterministic_id

paths = st.lists(st.text(alphabet="abc/0123456789@.", min_size=1, max_size=12), min_size=1, max_size=4).map("/".join)


@given(stream=st.text(min_size=1, max_size=20), key=paths)
def test_the_same_fact_always_gets_the_same_id(stream, key):
    first = deterministic_id(stream, key)
    assert first == deterministic_id(stream, key)
    assert first.version == 8 and first.variant == uuid.RFC_4122


def test_other_facts_other_streams_other_ids():
    ids = {deterministic_id(f"task-{t}", f"result/{c}/u{i}@x.test") for t in range(3) for c in range(3)
           for i in range(300)}
    assert len(ids) == 3 * 3 * 300


def test_facts_appended_together_sort_together():
    # a chunk's results share stream and parent path, so their ids share the leading bytes
    chunk = [deterministic_id("task-t", f"result/7/u{i}@x.test").bytes for i in range(500)]
    other_chunk = deterministic_id("task-t", "result/8/u0@x.test").bytes
    assert len({b[:6] for b in chunk}) == 1
    assert other_chunk[:4] == chunk[0][:4] and other_chunk[4:6] != chunk[0][4:6]
