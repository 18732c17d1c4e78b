"""The sinks' own binary ``text[]`` (place paths in COPY) is byte for byte what psycopg's
array dumper writes, which PostgreSQL reads (the sink conformance test reads it back)."""

from __future__ import annotations

import pytest
from psycopg.adapt import Transformer
from psycopg.pq import Format

from sinks.base import TEXT_ARRAY_OID, TextArrayDumper, text_array


@pytest.mark.parametrize(
    "path",
    [
        ("city",),
        ("city", "city-d1", "city-d1-s4", "city-d1-s4-g2", "city-d1-s4-g2-b7"),
        ("ciudad", "distrito-ñ", "街道", "x" * 300),
        (),
    ],
)
def test_a_place_path_is_dumped_as_psycopg_dumps_a_text_array(path: tuple[str, ...]) -> None:
    psycopg_own = Transformer()
    psycopg_own.set_dumper_types([TEXT_ARRAY_OID], Format.BINARY)
    expected = bytes(psycopg_own.dump_sequence([list(path)], [Format.BINARY])[0])
    assert text_array(path) == expected
    assert TextArrayDumper(tuple).dump(list(path)) == expected
