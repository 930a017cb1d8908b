from __future__ import annotations

import numpy as np
import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.model.labels import (
    canonical,
    make_labels,
    metric_name,
    sanitize_metric_name,
    sorted_within,
    validate_label_name,
    validate_metric_name,
    with_label,
    without,
)
from monitoringserver.model.matchers import Matcher, MatchOp, matches_all
from monitoringserver.model.samples import STALE_NAN, SampleBatch, is_stale_nan


def test_make_labels_sorts_and_drops_empty_values() -> None:
    labels = make_labels({"b": "2", "__name__": "up", "a": "1", "empty": ""})
    assert labels == (("__name__", "up"), ("a", "1"), ("b", "2"))
    assert metric_name(labels) == "up"


def test_canonical_escapes_values() -> None:
    labels = make_labels({"__name__": "m", "path": 'a"b\\c\n'})
    assert canonical(labels) == 'm{path="a\\"b\\\\c\\n"}'
    assert canonical(make_labels({"__name__": "m"})) == "m"


def test_with_label_and_without() -> None:
    labels = make_labels({"__name__": "m", "a": "1"})
    assert with_label(labels, "b", "2") == (("__name__", "m"), ("a", "1"), ("b", "2"))
    assert with_label(labels, "a", "") == (("__name__", "m"),)
    assert without(labels, ["__name__"]) == (("a", "1"),)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [("disk-io.read", "disk_io_read"), ("9lives", "_9lives"), ("ok:name", "ok:name")],
)
def test_sanitize_metric_name(raw: str, clean: str) -> None:
    assert sanitize_metric_name(raw) == clean
    validate_metric_name(clean)


@pytest.mark.parametrize("bad", ["", "1abc", "a-b", "a b"])
def test_invalid_names_are_rejected(bad: str) -> None:
    with pytest.raises(BadDataError, match="cannot accept"):
        validate_metric_name(bad)
    with pytest.raises(BadDataError, match="cannot accept label name"):
        validate_label_name(bad)


@pytest.mark.parametrize(
    ("op", "value", "subject", "expected"),
    [
        (MatchOp.EQ, "a", "a", True),
        (MatchOp.NEQ, "a", "a", False),
        (MatchOp.RE, "a.*", "abc", True),
        (MatchOp.RE, "b", "abc", False),  # fully anchored
        (MatchOp.NRE, "a.*", "abc", False),
        (MatchOp.RE, "", "", True),
        (MatchOp.RE, "a|b", "b", True),
    ],
)
def test_matcher_semantics(op: MatchOp, value: str, subject: str, expected: bool) -> None:
    assert Matcher("x", op, value).matches(subject) is expected


def test_matcher_on_missing_label_sees_empty_string() -> None:
    labels = make_labels({"__name__": "up"})
    assert matches_all([Matcher("job", MatchOp.EQ, "")], labels)
    assert not matches_all([Matcher("job", MatchOp.NEQ, "")], labels)
    assert str(Matcher("job", MatchOp.RE, 'a"b')) == 'job=~"a\\"b"'


def test_bad_regex_is_bad_data() -> None:
    with pytest.raises(BadDataError, match="cannot parse regex"):
        Matcher("x", MatchOp.RE, "(")


def test_sample_batch_roundtrip_and_concat() -> None:
    a = make_labels({"__name__": "a"})
    b = make_labels({"__name__": "b"})
    one = SampleBatch.from_rows([(a, 1, 1.0), (b, 2, 2.0)])
    two = SampleBatch.from_rows([(b, 3, 3.0)])
    merged = SampleBatch.concat([one, two])
    assert list(merged.rows()) == [(a, 1, 1.0), (b, 2, 2.0), (b, 3, 3.0)]
    assert len(merged.series) == 2
    assert len(merged.select(merged.values > 1.5)) == 2
    assert len(SampleBatch.concat([])) == 0


def test_sample_batch_validates_lengths() -> None:
    with pytest.raises(BadDataError, match="differ in length"):
        SampleBatch((), np.zeros(1, np.uint32), np.zeros(2, np.int64), np.zeros(1))
    with pytest.raises(BadDataError, match="out of range"):
        SampleBatch((), np.zeros(1, np.uint32), np.zeros(1, np.int64), np.zeros(1))


def test_stale_nan_is_distinguished_from_nan() -> None:
    arr = np.array([STALE_NAN, float("nan"), 1.0])
    assert is_stale_nan(arr).tolist() == [True, False, False]


@pytest.mark.parametrize(
    ("names", "stops", "expected"),
    [
        (["__name__", "job", "__name__", "a"], [2, 4], True),  # each set ascends
        (["__name__", "job", "a", "__name__"], [2, 4], False),
        (["a", "a"], [2], False),  # a repeat
        (["b", "a"], [1, 2], True),  # one name per set
        ([], [], True),
        (["a", "b"], [0, 2], True),  # an empty first set
    ],
)
def test_sorted_within(names: list[str], stops: list[int], expected: bool) -> None:
    assert sorted_within(names, stops) is expected
