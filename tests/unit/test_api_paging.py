"""The API's paging (``device_registry.api.deps.page``): a page read with one row more than it
shows says whether more follow, with a Link to the next page that keeps every filter."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from device_registry.api.deps import page


def request(query: str) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/alerts",
        "query_string": query.encode(),
        "headers": [],
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
    }
    return Request(scope)


def test_a_full_page_links_to_the_next_with_its_filters_and_the_last_has_no_link() -> None:
    answer = Response()
    shown = page(list(range(11)), 10, 20, request("level=yellow&limit=10&offset=20"), answer)
    assert shown == list(range(10))  # the extra row only told that more follow
    assert answer.headers["link"] == '</alerts?level=yellow&limit=10&offset=30>; rel="next"'
    last = Response()
    assert page(list(range(10)), 10, 30, request("level=yellow&limit=10&offset=30"), last) == list(
        range(10)
    )
    assert "link" not in last.headers


def test_the_first_page_gets_an_offset_and_repeated_filters_stay() -> None:
    answer = Response()
    page([1, 2, 3], 2, 0, request("tag=a&tag=b&limit=2"), answer)
    assert answer.headers["link"] == '</alerts?tag=a&tag=b&limit=2&offset=2>; rel="next"'
