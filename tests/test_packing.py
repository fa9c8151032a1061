"""Packed snapshots (pipeline/insights/packing.py): lossless for any state, readable when packed
before the shared dictionary, and a clear error for one that names a dictionary this version
does not have."""

from __future__ import annotations

import hashlib
import pickle
import zlib
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.insights import packing

floats = st.floats(allow_nan=False, width=32)
arrays = st.one_of(
    st.lists(floats, max_size=300).map(lambda xs: array("f", xs)),
    st.lists(st.integers(0, 255), max_size=300).map(lambda xs: array("B", xs)),
    st.lists(st.integers(-(2**62), 2**62), max_size=100).map(lambda xs: array("q", xs)),
)
states = st.recursive(
    st.one_of(st.none(), st.integers(), floats, st.text(max_size=20), arrays),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(states)
def test_any_state_comes_back_the_same(state):
    assert packing.unpack(packing.pack(state)) == state


def test_an_array_held_twice_is_restored_once():
    shared = array("f", range(100))
    restored = packing.unpack(packing.pack({"a": shared, "b": shared}))
    assert restored["a"] is restored["b"] and restored["a"] == shared


def test_the_shipped_dictionary_is_the_one_snapshots_name():
    data = packing.dictionary(packing.CURRENT_DICTIONARY)
    name, sha256 = packing.DICTIONARIES[packing.CURRENT_DICTIONARY]
    assert hashlib.sha256(data).hexdigest() == sha256 and zlib.adler32(data) == packing.CURRENT_DICTIONARY
    blob = packing.pack({"x": array("f", range(50))})
    assert blob[1] & 0x20 and int.from_bytes(blob[2:6], "big") == packing.CURRENT_DICTIONARY


def test_the_dictionary_makes_a_home_snapshot_smaller():
    from tests.test_insights_state import thirty_day_home

    insights, forecasts, _, _ = thirty_day_home(days=8)
    for state in (insights.__dict__, forecasts.forecaster.__dict__):
        head, chunks = packing.serialize(state)
        alone = zlib.compress(b"".join([packing._HEADER.pack(1, len(head)), head, *chunks]), packing.LEVEL)
        assert len(packing.pack(state)) < 0.95 * len(alone), (len(packing.pack(state)), len(alone))


def test_a_snapshot_packed_before_the_dictionary_still_opens():
    state = {"rings": array("f", [1.5] * 64), "name": "home-1", "n": 3}
    head, chunks = packing.serialize(state)
    before = zlib.compress(b"".join([packing._HEADER.pack(1, len(head)), head, *chunks]), packing.LEVEL)
    assert packing.unpack(before) == state


def test_a_snapshot_naming_an_unknown_dictionary_is_a_clear_error():
    other = b"not the shipped dictionary" * 10
    compressor = zlib.compressobj(packing.LEVEL, zdict=other)
    blob = compressor.compress(pickle.dumps(1)) + compressor.flush()
    with pytest.raises(ValueError, match="dictionary this version does not have"):
        packing.unpack(blob)


def test_a_cut_snapshot_is_an_error_not_a_wrong_state():
    blob = packing.pack({"rings": array("f", range(500))})
    with pytest.raises((ValueError, zlib.error)):
        packing.unpack(blob[: len(blob) // 2])
