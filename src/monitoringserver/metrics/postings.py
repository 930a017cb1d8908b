"""Series selection over postings: which series ids match a list of matchers.

Equality matchers with a value (``{a="x"}``) each name one posting list (ascending ids);
their intersection, started from the shortest list and probed into the others with a
binary search, costs a few microseconds however many series exist. The other matchers
then only filter those candidates: one label-set check per candidate when there are
few, a probe into one posting list for ``!=``, and a mask over every series (one pass
over the label's values) otherwise. Without an equality matcher, every matcher becomes
such a mask, which beats intersecting when a regular expression matches many values or
only negative matchers are given.

Semantics are :mod:`monitoringserver.model.matchers`': a series lacking a label sees
``""``. Callers hold the index lock: the postings (``array('Q')``) must not grow while
numpy views of them are alive, and none outlives a call (every result is a copy).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics.labelsets import matcher_mask, selectivity
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher, MatchOp, matches_all

__all__ = ["PROBE_MAX", "SCAN_MAX", "select_few", "select_ids"]

IdArray = NDArray[np.uint64]
Postings = Mapping[str, Mapping[str, "array[int]"]]
#: Most (candidate series x remaining matchers) checked one label set at a time; above
#: it, the remaining matchers filter through masks. A check costs about a microsecond,
#: a mask over 100 k series about thirty.
PROBE_MAX = 64
#: Longest posting list :func:`select_few` intersects (a binary search per id into each
#: other list: some tens of microseconds).
SCAN_MAX = 4096
_NO_VALUES: Mapping[str, array[int]] = {}


def select_ids(
    postings: Postings,
    labels: Sequence[Labels],
    matchers: Sequence[Matcher],
    n: int,
    *,
    probe_max: int = PROBE_MAX,
) -> IdArray:
    """Ascending ids (below ``n``) of the series matching every matcher; all ``n`` when
    there are none. ``postings``: label name → value → ascending ids; ``labels``: each
    id's label set. ``probe_max`` is :data:`PROBE_MAX` (tests vary it)."""
    split = _split(postings, matchers)
    if split is None:
        return np.empty(0, dtype=np.uint64)
    lists, rest = split
    if not lists:
        return _by_masks(postings, rest, n)
    ids = _intersect(lists)
    if len(ids) == 0 or not rest:
        return ids
    if len(ids) * len(rest) <= probe_max:
        return _checked(ids, labels, rest)
    for m in sorted(rest, key=selectivity):
        values = postings.get(m.name, _NO_VALUES)
        if m.op is MatchOp.NEQ and m.value:  # only the value's series are out
            hit = values.get(m.value)
            if hit:
                ids = ids[~_members(ids, hit)]
        else:
            ids = ids[matcher_mask(values, m, n)[ids]]
        if len(ids) == 0:
            break
    return ids


def select_few(
    postings: Postings,
    labels: Sequence[Labels],
    matchers: Sequence[Matcher],
    limit: int,
    scan: int = SCAN_MAX,
) -> IdArray | None:
    """:func:`select_ids` when it is cheap, else ``None``: only when an equality
    matcher with a value names at most ``scan`` ids and the equality matchers leave at
    most ``limit`` candidates (each then checked against the other matchers), so the
    work is bounded by ``scan`` and ``limit`` whatever the index holds."""
    split = _split(postings, matchers)
    if split is None:
        return np.empty(0, dtype=np.uint64)
    lists, rest = split
    if not lists or min(map(len, lists)) > scan:
        return None
    ids = _intersect(lists)
    if len(ids) > limit:
        return None
    return _checked(ids, labels, rest) if rest and len(ids) else ids


def _split(
    postings: Postings, matchers: Sequence[Matcher]
) -> tuple[list[array[int]], list[Matcher]] | None:
    """The posting lists of the equality matchers with a value, and the other matchers;
    ``None`` when such a matcher names no series."""
    lists: list[array[int]] = []
    rest: list[Matcher] = []
    for m in matchers:
        if m.op is MatchOp.EQ and m.value:
            hit = postings.get(m.name, _NO_VALUES).get(m.value)
            if not hit:
                return None
            lists.append(hit)
        else:
            rest.append(m)
    return lists, rest


def _checked(ids: IdArray, labels: Sequence[Labels], matchers: list[Matcher]) -> IdArray:
    """Those of ``ids`` whose label sets match ``matchers``: one check per id."""
    keep = [matches_all(matchers, labels[i]) for i in ids.tolist()]
    return ids[np.array(keep, dtype=np.bool_)]


def _intersect(lists: list[array[int]]) -> IdArray:
    """Ids in every (non-empty, ascending) list, as a new array."""
    lists = sorted(lists, key=len)
    ids = np.frombuffer(lists[0], dtype=np.uint64).copy()
    for other in lists[1:]:
        ids = ids[_members(ids, other)]
        if len(ids) == 0:
            break
    return ids


def _members(ids: IdArray, posting: array[int]) -> NDArray[np.bool_]:
    """Which of ``ids`` are in ``posting`` (ascending, non-empty): a binary search each."""
    sorted_ids = np.frombuffer(posting, dtype=np.uint64)
    pos = sorted_ids.searchsorted(ids)
    np.minimum(pos, len(sorted_ids) - 1, out=pos)
    found: NDArray[np.bool_] = sorted_ids[pos] == ids
    return found


def _by_masks(postings: Postings, matchers: list[Matcher], n: int) -> IdArray:
    mask = np.ones(n, dtype=np.bool_)
    for m in sorted(matchers, key=selectivity):
        mask &= matcher_mask(postings.get(m.name, _NO_VALUES), m, n)
        if not mask.any():
            break
    return np.flatnonzero(mask).astype(np.uint64)
