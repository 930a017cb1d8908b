"""The parser remembers ASTs and selector matchers of repeated queries, bounded."""

from __future__ import annotations

import promql_parser as pp
import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.promql import parser


def test_same_text_gives_the_same_ast_and_matchers_stay_private() -> None:
    query = 'node_load1{instance="cache-test-a"}'
    expr = parser.parse(query)
    assert parser.parse(query) is expr
    assert isinstance(expr, pp.VectorSelector)
    first = parser.selector_matchers(expr)
    first[0].append(Matcher("x", MatchOp.EQ, "y"))
    first.append([])
    again = parser.selector_matchers(expr)
    assert again == [
        [
            Matcher("__name__", MatchOp.EQ, "node_load1"),
            Matcher("instance", MatchOp.EQ, "cache-test-a"),
        ]
    ]


def test_caches_are_bounded_and_long_queries_are_not_kept() -> None:
    for i in range(parser._CACHE_ENTRIES + 10):
        expr = parser.parse(f'up{{job="bound-{i}"}}')
        assert isinstance(expr, pp.VectorSelector)
        parser.selector_matchers(expr)
    assert len(parser._parsed) <= parser._CACHE_ENTRIES
    assert len(parser._matchers) <= parser._CACHE_ENTRIES
    long_query = "up + " * (parser._CACHE_MAX_CHARS // 5) + "up"
    parser.parse(long_query)
    assert long_query not in parser._parsed


@pytest.mark.parametrize("query", ["sum(", "", '{__name__=~".*"}'])
def test_parse_errors_are_raised_every_time(query: str) -> None:
    for _ in range(2):
        with pytest.raises(BadDataError):
            parser.parse(query)
