from datetime import UTC, datetime

from device_registry import hash_secret, parse_device_csv, parse_device_json, verify_secret
from device_registry.credentials import render_password_file

NOW = datetime(2026, 11, 22, tzinfo=UTC)


def test_good_rows_are_kept_and_bad_rows_reported_by_line_and_field() -> None:
    text = (
        "device_id,device_type,place_path,department,tags,lat,lon\n"
        "wl-1,water_level,sh/pd/s1,water,low;underpass,31.2,121.5\n"
        "wl 2,water_level,sh/pd,,,,\n"
        "wl-3,water_level,,,,,\n"
        "wl-4,water_level,sh/pd,,,95,0\n"
        "wl-5,water_level,sh/pd,,,,,extra\n"
        "wl-6,water_level,sh,,,,\n"
    )
    parsed = parse_device_csv(text, NOW)
    devices, errors = parsed.devices, parsed.errors
    assert [d.device_id for d in devices] == ["wl-1", "wl-6"]
    assert parsed.lines == [2, 7] and not parsed.unreadable
    assert devices[0].tags == ("low", "underpass") and devices[0].place_path == ("sh", "pd", "s1")
    assert [(e.line, e.field) for e in errors] == [
        (3, "device_id"),
        (4, "place_path"),
        (5, "lat"),
        (6, "row"),
    ]
    assert "line 5: lat:" in str(errors[2])


def test_missing_required_column_is_reported_once() -> None:
    parsed = parse_device_csv("device_id,place_path\nx,sh\n", NOW)
    assert parsed.unreadable and not parsed.devices
    assert [(e.line, e.field) for e in parsed.errors] == [(1, "device_type")]


def test_json_items_are_numbered_from_one() -> None:
    parsed = parse_device_json(
        '[{"device_id": "a", "device_type": "t", "place_path": "sh/pd"}, 3,'
        ' {"device_id": "b", "device_type": "t", "place_path": ["sh"]}]',
        NOW,
    )
    assert [d.device_id for d in parsed.devices] == ["a", "b"] and parsed.lines == [1, 3]
    assert [(e.line, e.field) for e in parsed.errors] == [(2, "item")]
    assert parse_device_json("{}", NOW).unreadable and parse_device_json("[", NOW).unreadable


def test_json_rows_are_reported_by_item_and_csv_rows_by_line() -> None:
    items = parse_device_json(
        '[1,\n {"device_id": "a b", "device_type": "t", "place_path": "sh"}]', NOW
    )
    assert [str(e).split(":")[0] for e in items.errors] == ["item 1", "item 2"]
    assert items.unit == "item"
    rows = parse_device_csv("device_id,device_type,place_path\nwl 1,t,sh\n", NOW)
    assert str(rows.errors[0]).startswith("line 2: device_id:") and rows.unit == "line"
    broken = parse_device_json('[\n{"device_id": }]', NOW)  # not JSON: where it breaks, by line
    assert str(broken.errors[0]).startswith("line 2: file: not valid JSON")


def test_an_empty_required_field_is_named_without_the_rest_of_the_row() -> None:
    parsed = parse_device_csv("device_id,device_type,place_path\nwl-1,,sh\n", NOW)
    assert [str(e) for e in parsed.errors] == ["line 2: device_type: Field required"]
    items = parse_device_json('[{"device_id": "a", "place_path": "sh"}]', NOW)
    assert [str(e) for e in items.errors] == ["item 1: device_type: Field required"]


def test_secrets_hash_in_mosquitto_format_and_verify() -> None:
    hashed = hash_secret("s3cret", salt=b"0123456789ab")
    assert hashed.startswith("$7$101$")
    assert verify_secret("s3cret", hashed) and not verify_secret("other", hashed)
    assert render_password_file([("b", "h2"), ("a", "h1")]) == "a:h1\nb:h2\n"


def test_a_csv_with_a_byte_order_mark_is_read() -> None:
    parsed = parse_device_csv("\ufeffdevice_id,device_type,place_path\nwl-1,water_level,sh\n", NOW)
    assert not parsed.errors and [d.device_id for d in parsed.devices] == ["wl-1"]


def test_imported_devices_are_provisioned_unless_their_state_says_otherwise() -> None:
    csv_text = (
        "device_id,device_type,place_path,state\nwl-1,water_level,sh,\nwl-2,water_level,sh,active\n"
    )
    parsed = parse_device_csv(csv_text, NOW)
    assert [d.state.value for d in parsed.devices] == ["provisioned", "active"]
    items = '[{"device_id": "a", "device_type": "t", "place_path": "sh"}]'
    assert parse_device_json(items, NOW).devices[0].state.value == "provisioned"


def test_a_value_the_database_cannot_store_is_reported_by_line_and_field() -> None:
    parsed = parse_device_csv(
        "device_id,device_type,place_path,department,tags\n"
        "wl-1,water_level,sh,wa\x00ter,\n"
        "wl-2,water_level,sh,,a;b\x00\n"
        "wl-3,water_level,sh,,\n",
        NOW,
    )
    assert [d.device_id for d in parsed.devices] == ["wl-3"]
    assert [(e.line, e.field) for e in parsed.errors] == [(2, "department"), (3, "tags")]
    assert "NUL" in parsed.errors[0].message


def test_a_place_path_with_an_empty_id_between_two_slashes_is_refused_by_row() -> None:
    """``sim//x`` would make a district ``x`` under the city: a typo, refused, in CSV and JSON;
    a '/' at either end is let be."""
    parsed = parse_device_csv(
        "device_id,device_type,place_path\na-1,noise,sim//x\nb-1,noise,/sim/sim-d1/\n", NOW
    )
    assert [str(e) for e in parsed.errors] == [
        "line 2: place_path: place path 'sim//x': an empty place id between two '/'"
    ]
    assert [d.place_path for d in parsed.devices] == [("sim", "sim-d1")]
    items = '[{"device_id": "c-1", "device_type": "noise", "place_path": "sim//x"}]'
    assert [str(e) for e in parse_device_json(items, NOW).errors] == [
        "item 1: place_path: place path 'sim//x': an empty place id between two '/'"
    ]


def test_a_device_id_that_cannot_be_an_mqtt_login_is_refused_by_row() -> None:
    """A MAC address with ':' would be issued a secret it can never log in with: the broker's
    password file ends the login at the first ':'."""
    text = "device_id,device_type,place_path\n00:1a:2b:3c:4d:5e,noise,sh/pd\n00-1a-2b,noise,sh/pd\n"
    parsed = parse_device_csv(text, NOW)
    assert [d.device_id for d in parsed.devices] == ["00-1a-2b"]
    (error,) = parsed.errors
    assert (error.line, error.field) == (2, "device_id")
    assert "write it with '-' (00-1a-2b-3c-4d-5e)" in str(error)


def test_a_quote_left_open_is_named_at_its_line_not_where_the_row_it_swallowed_ends() -> None:
    text = (
        "device_id,device_type,place_path\n"
        "c-1,water_level,c1/d1\n"
        '"c-3,water_level,c1/d1\n'  # line 3: a quote never closed takes the lines after it
        "c-4,water_level,c1/d1\n"
        "c-5,water_level,c1\n"
    )
    parsed = parse_device_csv(text, NOW)
    assert [d.device_id for d in parsed.devices] == ["c-1"]
    assert [str(e) for e in parsed.errors] == [
        'line 3: row: a quote (") opened on this line runs to line 5: lines 3 to 5 read as one'
        " row (a quote missing?)"
    ]
    spaced = parse_device_csv(text.replace("c1/d1\n", "c1/d1\n\n\n", 1), NOW)  # blank lines
    assert [e.line for e in spaced.errors] == [5]


def test_a_short_row_and_a_column_named_twice_are_said_as_such() -> None:
    short = parse_device_csv("device_id,device_type,place_path\nc-2,water_level\n", NOW)
    assert [str(e) for e in short.errors] == [
        "line 2: row: 2 fields of the header's 3: no place_path"
    ]
    # optional fields at the end may be left off, as spreadsheets write such rows
    trailing = parse_device_csv("device_id,device_type,place_path,tags\nc-3,w,c1\n", NOW)
    assert [d.device_id for d in trailing.devices] == ["c-3"] and not trailing.errors
    twice = parse_device_csv("device_id,device_type,place_path,device_id\nc-1,w,c1,c-2\n", NOW)
    assert twice.devices == []  # not c-2, the row's last value, taken without a word
    assert [str(e) for e in twice.errors] == [
        "line 1: device_id: the header names this column twice"
    ]
    semicolons = parse_device_csv("device_id;device_type;place_path\nx;y;z\n", NOW)
    assert str(semicolons.errors[0]).endswith(
        "which holds 'device_id;device_type;place_path' (separated by ';' rather than ','?)"
    )
