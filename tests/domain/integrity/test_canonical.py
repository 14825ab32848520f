"""Tests of domain.integrity.canonical: RFC 8785 output, byte for byte, and refusals that name the field.

``canonical_json`` takes a fast path through ``orjson`` (the standard library's
encoder for what orjson refuses) for values whose floats print alike and with no
astral-plane object keys; ``rfc8785`` is the reference encoder the paths must
agree with.
"""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InvalidPayload
from domain.integrity import canonical
from domain.integrity.canonical import NumberRecordEncoder, _float_differs, canonical_json, encoded_object

MAX_SAFE = 2**53 - 1

# Text mixing arbitrary valid code points with the ones encoders disagree about
# most often: controls, quotes, backslash, U+2028, the top of the BMP and astral
# characters (two UTF-16 code units each, which changes RFC 8785's key order).
_chars = st.one_of(
    st.characters(exclude_categories=("Cs",)),
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
    st.sampled_from(["\x00", "\x1f", "\x7f", '"', "\\", "\u2028", "\ue000", "\uffff", "\U0001f600", "\U00010000"]),
)
texts = st.text(_chars, max_size=8)
# Keys that sort differently by code point and by UTF-16 code unit, drawn often
# enough that one dict holds a pair of them.
keys = texts | st.sampled_from(["\ue000", "\uffff", "a\uffff", "\U00010000", "\U0001f600", "a\U0001f600"])
ints = st.integers(min_value=-MAX_SAFE, max_value=MAX_SAFE)
floats = st.floats(allow_nan=False, allow_infinity=False)


def _json(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=25,
    )


float_free_values = _json(st.none() | st.booleans() | ints | texts)
any_values = _json(st.none() | st.booleans() | ints | floats | texts)


@settings(max_examples=100, deadline=None)
@given(float_free_values)
def test_float_free_values_encode_exactly_as_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=100, deadline=None)
@given(any_values)
def test_any_json_value_encodes_exactly_as_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


# Values the fast path takes: object keys inside the BMP, floats that print without an exponent.
_bmp_keys = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=6)
_plain_floats = floats.filter(lambda v: not canonical._float_differs(v))
fast_values = st.recursive(
    st.none() | st.booleans() | ints | _plain_floats | st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_bmp_keys, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(fast_values)
def test_values_on_the_fast_path_encode_exactly_as_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


def test_float_subclasses_such_as_numpy_scalars_encode_as_their_value() -> None:
    import numpy as np

    value = {"p": np.float64(0.1), "n": [np.float64(2.5), 3], "q": True}
    assert (
        canonical_json(value)
        == b'{"n":[2.5,3],"p":0.1,"q":true}'
        == rfc8785.dumps({"p": 0.1, "n": [2.5, 3], "q": True})
    )


def test_astral_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+E000 is one code unit 0xE000; U+10000 is 0xD800 0xDC00, so it sorts first.
    value = {"\ue000": 1, "\U00010000": 2}

    encoded = canonical_json(value)

    assert encoded == '{"\U00010000":2,"\ue000":1}'.encode()


@pytest.mark.parametrize("value", [MAX_SAFE, -MAX_SAFE], ids=["max", "min"])
def test_integers_at_the_safe_limit_are_accepted(value: int) -> None:
    assert canonical_json({"n": value}) == f'{{"n":{value}}}'.encode()


@pytest.mark.parametrize(
    ("value", "field"),
    [
        pytest.param({"a": float("nan")}, "payload.a", id="nan"),
        pytest.param({"a": [1, float("inf")]}, "payload.a.1", id="plus-infinity"),
        pytest.param({"a": {"b": float("-inf")}}, "payload.a.b", id="minus-infinity"),
        pytest.param({"a": 2**53}, "payload.a", id="int-above-safe-range"),
        pytest.param({"a": [-(2**53)]}, "payload.a.0", id="int-below-safe-range"),
        pytest.param({"a": ["ok", "\ud800"]}, "payload.a.1", id="lone-surrogate-in-value"),
        pytest.param({"a": {"\udfff": 1}}, "payload.a.<key>", id="lone-surrogate-in-key"),
        pytest.param({"a": {1: "x"}}, "payload.a", id="non-string-key"),
        pytest.param({"a": {1, 2}}, "payload.a", id="set"),
        pytest.param({"a": [b"raw"]}, "payload.a.0", id="bytes"),
        pytest.param({"a": {"b": object()}}, "payload.a.b", id="object"),
    ],
)
def test_values_json_cannot_carry_are_refused_naming_their_path(value: Any, field: str) -> None:
    with pytest.raises(InvalidPayload) as caught:
        canonical_json(value)

    assert caught.value.field == field


def test_an_empty_root_path_names_fields_without_a_leading_dot() -> None:
    with pytest.raises(InvalidPayload) as caught:
        canonical_json({"payload": {"score": float("nan")}}, path="")

    assert caught.value.field == "payload.score"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"score": 0.5, "note": "\ud800"}, id="beside-a-float"),
        pytest.param({"\U0001f600": 1, "note": "\ud800"}, id="beside-an-astral-key"),
    ],
)
def test_a_lone_surrogate_is_named_even_when_the_value_needs_the_reference_encoder(value: Any) -> None:
    with pytest.raises(InvalidPayload) as caught:
        canonical_json(value)

    assert caught.value.field == "payload.note"


EDGE_FLOATS = [
    0.1,
    -0.0,
    0.0,
    2.5,
    -1.5,
    1e-7,
    1e-6,
    1.5e-6,
    1e-5,
    1.5e-5,
    1e-4,
    0.00012345,
    1e15,
    1.5e15,
    1e16,
    1.5e16,
    1e20,
    1e21,
    1.5e21,
    123456789012345680.0,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    9007199254740993.0,
    0.30000000000000004,
    100.0,
    1234.5678,
    -987654.321,
]


@pytest.mark.parametrize("value", EDGE_FLOATS, ids=repr)
def test_floats_near_the_exponent_boundaries_encode_exactly_as_rfc8785(value: float) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)
    assert canonical_json({"x": [value, {"y": value}]}) == rfc8785.dumps({"x": [value, {"y": value}]})


@settings(max_examples=3000, deadline=None)
@given(floats)
def test_every_float_encodes_exactly_as_rfc8785(value: float) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=3000, deadline=None)
@given(floats)
def test_the_float_test_without_repr_agrees_with_repr(value: float) -> None:
    text = repr(value)
    assert _float_differs(value) == ("e" in text or text.endswith(".0"))


# -- values encoded once ----------------------------------------------------------

record_keys = ["f1", "f0", "b", "é", "\uffff", "\U0001f600", "a b", 'q"']
record_values = st.one_of(
    floats,
    floats,
    _plain_floats,
    ints,
    st.sampled_from([0.0, -0.0, 1.0, 1e-5, 1e16, 1e21, 2**53, 2**60, float("nan"), float("inf")]),
    st.none(),
    st.booleans(),
    texts,
)


bmp_record_keys = [key for key in record_keys if key.isascii() or max(map(ord, key)) <= 0xFFFF]


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from([record_keys, bmp_record_keys]),
    st.dictionaries(st.sampled_from([*record_keys, "extra"]), record_values),
)
def test_a_number_record_encodes_exactly_as_canonical_json_or_is_refused_alike(
    names: list[str], record: dict[str, Any]
) -> None:
    _encodes_as_canonical_json(NumberRecordEncoder(names), record)


def _encodes_as_canonical_json(encoder: NumberRecordEncoder, record: dict[str, Any]) -> None:
    """``encoder`` writes ``record`` as canonical JSON does (and RFC 8785), or refuses it naming the same field."""
    try:
        expected = canonical_json(record, path="input")
    except InvalidPayload as refused:
        with pytest.raises(InvalidPayload) as caught:
            encoder.encode(record)
        assert caught.value.field == refused.field
    else:
        assert encoder.encode(record) == expected == rfc8785.dumps(record)
        assert encoder.encoded(record).canonical == expected


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(keys, any_values, max_size=5),
    st.dictionaries(st.sampled_from(["input", "a", "zz", "ab"]), any_values, max_size=3),
)
def test_encoded_members_are_spliced_where_the_standard_puts_them(outer: dict[str, Any], inner: dict[str, Any]) -> None:
    members = {k: encoded_object(v) if isinstance(v, dict) else v for k, v in inner.items()}
    value = {**outer, **members}
    plain = {**outer, **inner}
    assert canonical_json(value) == rfc8785.dumps(plain)


def test_an_encoded_object_is_a_read_only_dict() -> None:
    obj = encoded_object({"b": 1, "a": [2.5]})
    assert obj == {"a": [2.5], "b": 1} and obj.canonical == b'{"a":[2.5],"b":1}'
    for change in (lambda: obj.__setitem__("c", 1), lambda: obj.pop("a"), lambda: obj.update(c=1), obj.clear):
        with pytest.raises(TypeError, match="read-only"):
            change()
    assert obj == {"a": [2.5], "b": 1}


def test_a_bad_member_next_to_an_encoded_one_is_named() -> None:
    with pytest.raises(InvalidPayload) as caught:
        canonical_json({"input": encoded_object({"x": 1}), "output": {"p": float("nan")}})
    assert caught.value.field == "payload.output.p"


def test_a_value_holding_the_splice_marker_itself_is_still_encoded_exactly() -> None:
    marker = canonical._MARKER + "0"
    for plain in ({"input": {"x": 1}, "note": marker}, {"input": {"x": marker}}, {marker: 1, "input": {"x": 2}}):
        value = {**plain, "input": encoded_object(plain["input"])}
        assert canonical_json(value) == rfc8785.dumps(plain)


# Keys whose own text holds what the fast form looks for in a record's bytes (an exponent, null, ".0,").
marked_keys = ["be-", "e+x", "null", "x.0,y", "f1"]


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from([bmp_record_keys, marked_keys]).flatmap(
        lambda names: st.fixed_dictionaries({key: st.one_of(_plain_floats, ints, record_values) for key in names})
    )
)
def test_a_full_number_record_encodes_exactly_as_canonical_json(record: dict[str, Any]) -> None:
    _encodes_as_canonical_json(NumberRecordEncoder(list(record)), record)
