"""The duty console in headless Chromium (Debian's ``chromium``, driven by Playwright) against
the running pipeline: water-level readings published over MQTT open an incident that appears on
the page without a reload; acknowledging and closing it from the page changes it in the
database; a district officer does not see another district's incident; screenshots go to the
test artefacts (``$CITYVITALS_ARTIFACTS``, default ``test-artifacts/`` at the repository root)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from cityvitals import db
from cityvitals.contracts import Department
from cityvitals.topics import Topic
from device_registry.access import Role
from tests.integration.conftest import Pipeline, add_user, api_client, reading, wait_for
from tests.integration.test_incidents import Street
from wiring.cli import app
from wiring.services import open_registry

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip(
        "no chromium on PATH: the console's browser tests drive Debian's chromium "
        "(./dev setup installs it)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / os.environ.get("CITYVITALS_ARTIFACTS", "test-artifacts")
"""Where the screenshots go (relative to the repository root unless absolute)."""
SHOWS_UP_MS = 90_000
"""How long an incident may take from MQTT to the page (readings, rules, incident stage, sinks)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture()
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    yield context.new_page()
    context.close()


def base_url(pipeline: Pipeline) -> str:
    return f"http://127.0.0.1:{pipeline.settings.api_port}"


def open_console(page: Page, pipeline: Pipeline, token: str) -> None:
    """Open the console with the login link ``cityvitals up`` prints; wait until it is live."""
    page.goto(f"{base_url(pipeline)}/console#token={token}")
    expect(page.locator("#console")).to_be_visible()
    expect(page.locator("#live")).to_have_text("live")
    assert "token=" not in page.url  # the link's token leaves the address bar


def incident_row(page: Page, street: str) -> Any:
    return page.locator(f'#incidents tbody tr:has(td.place:has-text("{street}"))')


def flooded(pipeline: Pipeline) -> Street:
    """A new street, in a district of its own, with one sensor reading 8 cm of water."""
    street = Street(pipeline)
    street.water(street.sensor(0), 8.0)  # past the 5 cm auto-alarm depth
    return street


def officer(pipeline: Pipeline, scope: tuple[str, ...] = ()) -> str:
    return add_user(pipeline.settings, f"duty-{uuid.uuid4().hex[:6]}", Role.DUTY_OFFICER, scope)


def test_a_simulated_incident_appears_without_a_reload(page: Page, pipeline: Pipeline) -> None:
    open_console(page, pipeline, officer(pipeline))
    page.evaluate("window.notReloaded = true")
    street = flooded(pipeline)
    row = incident_row(page, street.street)
    expect(row).to_be_visible(timeout=SHOWS_UP_MS)
    expect(row.locator("td.category")).to_have_text("flooding")
    expect(row.locator(".level")).to_have_text("blue")
    expect(row.locator("td.sla")).to_contain_text("accept")
    assert page.evaluate("window.notReloaded") is True


def test_acknowledging_and_closing_from_the_page_changes_the_database(
    page: Page, pipeline: Pipeline
) -> None:
    open_console(page, pipeline, officer(pipeline))
    street = flooded(pipeline)
    row = incident_row(page, street.street)
    expect(row).to_be_visible(timeout=SHOWS_UP_MS)
    incident_id = row.get_attribute("data-incident-id")
    assert incident_id
    row.click()
    expect(page.locator('#detail [data-field="state"]')).to_have_text("dispatched")
    # the handling limit is the next one, not one that ended
    expect(page.locator('#detail [data-field="handle_by"]')).to_contain_text("· once accepted")

    page.click('#actions [data-action="acknowledge"]')
    expect(page.locator("#action-result")).to_have_text("acknowledge sent")
    wait_for(
        lambda: pipeline.query(
            "SELECT actor FROM incident_transitions WHERE incident_id = %s AND action = 'acknowledge'",
            incident_id,
        ),
        what="the acknowledgement in incident_transitions",
    )
    expect(page.locator('#detail .timeline li[data-action="acknowledge"]')).to_be_visible()
    # the table and the detail say who saw it, as the incident does once the desk took it
    expect(row.locator("td.seen")).to_contain_text("duty_officer")
    expect(page.locator('#detail [data-field="acknowledged"]')).to_contain_text("duty_officer")
    expect(page.locator('#actions [data-action="acknowledge"]')).to_be_hidden()  # seen

    page.click('#actions [data-action="reassign"]')  # no department: asked for, not sent
    expect(page.locator("#action-result")).to_have_text(
        "reassigning needs a department: write its id above"
    )
    page.click('#actions [data-action="close"]')  # not verified: it asks for a reason first
    expect(page.locator("#action-result")).to_contain_text("needs a reason")
    page.fill("#action-reason", "a false alarm: the drain was being cleaned")
    page.click('#actions [data-action="close"]')
    expect(page.locator("#action-result")).to_have_text("close sent")
    wait_for(
        lambda: pipeline.query(
            "SELECT 1 FROM incidents WHERE incident_id = %s AND state = 'closed'", incident_id
        ),
        what="the incident closed in the database",
    )
    (step,) = pipeline.query(
        "SELECT actor, reason FROM incident_transitions WHERE incident_id = %s AND action = 'close'",
        incident_id,
    )
    assert step[1] == "a false alarm: the drain was being cleaned" and "duty_officer" in step[0]
    expect(row).to_have_attribute("data-state", "closed")
    expect(row.locator("td.state")).to_have_text("closed")
    expect(page.locator('#detail [data-field="state"]')).to_have_text("closed")
    expect(page.locator("#actions button:visible")).to_have_text(["Reopen", "Note"])
    # Its limits are history now, not a countdown.
    expect(page.locator('#detail [data-field="accept_by"]')).to_contain_text("· ended: closed")
    # Loaded again (the next shift), the console still lists it, greyed under the open ones.
    page.reload()
    expect(page.locator("#live")).to_have_text("live")
    expect(row).to_have_attribute("data-state", "closed", timeout=SHOWS_UP_MS)
    expect(row).to_have_class("closed")


def test_a_department_operator_answers_its_dispatch_from_the_page(
    page: Page, pipeline: Pipeline, browser: Browser
) -> None:
    """The buttons follow the user and the incident: the department the incident was
    dispatched to may accept or reject it, then say it is on site or handled; nothing else.
    Handled while its sensor still reads water, a duty officer gets no verify, and is told
    why and what comes instead; beside the alert that fired at 8 cm, what its sensor reads
    now."""
    street = Street(pipeline)
    sensor = street.sensor(0)
    street.water(sensor, 8.0)  # past the 5 cm auto-alarm depth
    found = wait_for(
        lambda: pipeline.query(
            "SELECT incident_id, department FROM incidents WHERE place_id = %s "
            "AND state = 'dispatched'",
            street.street,
        ),
        timeout=SHOWS_UP_MS / 1000,
        what="the incident dispatched",
    )
    incident_id, department = found[0]
    with open_registry(pipeline.settings) as registry:  # the routing's department, registered
        registry.put_department(Department(department_id=department, name=department), "itest")
    name = f"crew-{uuid.uuid4().hex[:6]}"
    operator = add_user(pipeline.settings, name, Role.DEPARTMENT_OPERATOR, (), department)
    open_console(page, pipeline, operator)
    expect(page.locator("#department")).to_have_text(department)  # whom it answers for
    # Its header, with a department chip more than a duty officer's, stays one line on a
    # laptop's screen (the alert count gives way).
    page.set_viewport_size({"width": 1200, "height": 900})
    page.evaluate("onAlerts({firing: 12, by_level: {blue: 3, yellow: 4, orange: 2, red: 3}})")
    tops = [page.locator(f"#{part}").bounding_box() for part in ("who", "department", "logout")]
    assert all(box is not None for box in tops)
    assert max(b["y"] for b in tops if b) - min(b["y"] for b in tops if b) < 20, tops
    page.set_viewport_size({"width": 1440, "height": 900})
    row = incident_row(page, street.street)
    expect(row).to_be_visible(timeout=SHOWS_UP_MS)
    row.click()
    buttons = page.locator("#actions button:visible")
    expect(buttons).to_have_text(["Accept", "Reject", "Note"])  # a note: its progress
    expect(page.locator("#action-department")).to_be_hidden()  # no reassign for a department
    page.click('#actions [data-action="accept"]')
    expect(page.locator("#action-result")).to_have_text("accept sent")
    wait_for(
        lambda: pipeline.query(
            "SELECT actor FROM incident_transitions WHERE incident_id = %s AND action = 'accept'",
            incident_id,
        ),
        what="the acceptance in incident_transitions",
    )
    expect(page.locator('#detail [data-field="state"]')).to_have_text("accepted")
    expect(buttons).to_have_text(["On site", "Handled", "Note"])
    # a department's role reads no devices: their ids are text, and no device can be looked up
    expect(page.locator('#detail [data-field="devices"]')).not_to_have_text("–")
    expect(page.locator("#detail button.link")).to_have_count(0)
    expect(page.locator("#device-find")).to_be_hidden()
    expect(page.locator("#withheld")).to_be_hidden()
    page.click('#actions [data-action="handled"]')
    expect(page.locator('#detail [data-field="state"]')).to_have_text("handled")
    expect(page.locator("#withheld")).to_be_hidden()  # verifying is not the department's

    street.water(sensor, 7.5)  # ebbing, still above its level's clearing depth
    wait_for(lambda: len(pipeline.rows(sensor[0])) == 2, what="the second reading stored")
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        duty = context.new_page()
        open_console(duty, pipeline, officer(pipeline))
        incident_row(duty, street.street).click()
        expect(duty.locator('#detail [data-field="state"]')).to_have_text("handled")
        alert = duty.locator("#detail li", has_text="waterlogging-depth")
        expect(alert).to_contain_text("water 8 cm")  # as it fired
        expect(alert.locator(".latest")).to_contain_text("newest water_level_cm 7.5 at ")
        expect(duty.locator('#actions [data-action="close"]')).to_be_visible()
        expect(duty.locator('#actions [data-action="verify"]')).to_be_hidden()
        expect(duty.locator("#withheld")).to_contain_text(
            "no verify: verify is refused while 1 of its alerts still fires"
        )
        expect(duty.locator("#withheld")).to_contain_text("verified by itself")
    finally:
        context.close()


def test_an_order_no_webhook_got_shows_on_its_incident_until_it_is_sent_again(
    page: Page, pipeline: Pipeline
) -> None:
    """The notifier gave up delivering the incident's dispatch order to a webhook (its dead
    letter, as the sinks store it): the detail says the department may not know, and stops
    saying so once ``cityvitals resend`` delivered it (its record in ``deadletters_resent``)."""
    from sinks.incidents import incident_detail

    open_console(page, pipeline, officer(pipeline))
    street = flooded(pipeline)
    row = incident_row(page, street.street)
    expect(row).to_be_visible(timeout=SHOWS_UP_MS)
    incident_id = row.get_attribute("data-incident-id")
    assert incident_id
    wait_for(
        lambda: pipeline.query("SELECT 1 FROM dispatches WHERE incident_id = %s", incident_id),
        what="its dispatch order",
    )
    with db.connect(pipeline.settings) as conn:
        order = incident_detail(conn, incident_id).dispatches[0]
    kept = (pipeline.settings.topic(Topic.DEADLETTER), 0, 10**12 + uuid.uuid4().int % 10**9)
    pipeline.query(
        "INSERT INTO deadletters (kafka_topic, kafka_partition, kafka_offset, stage, reason,"
        " source, payload_b64, received_at) VALUES (%s, %s, %s, 'notify', %s, %s, %s, now())"
        " RETURNING 1",
        *kept,
        "webhook http://127.0.0.1:9/sms: HTTP 503 after 700 attempts over 6 h",
        f"{pipeline.settings.topic(Topic.DISPATCH)}[0]@7",
        base64.b64encode(order.model_dump_json().encode()).decode(),
    )
    try:
        row.click()
        # the order says, as the department read it, what the alert said
        assert order.summary.startswith("water "), order.summary
        sent = page.locator('#detail li[data-kind="order"]')
        expect(sent).to_contain_text(f'"{order.summary}"')
        expect(page.locator("#detail h3.undelivered")).to_have_text("Not delivered (1)")
        told = page.locator("#detail ul.undelivered li")
        expect(told).to_contain_text(f"order for {order.department} → http://127.0.0.1:9/sms")
        expect(told).to_contain_text("HTTP 503 after 700 attempts over 6 h")
        expect(told).to_contain_text("send again: cityvitals resend")
        shown = CliRunner().invoke(
            app, ["incidents", "show", incident_id], env=pipeline.settings.to_env()
        )
        assert shown.exit_code == 0, shown.output
        assert f"{order.dispatch_id} to {order.department}" in shown.output
        assert f': "{order.summary}"' in shown.output  # what the order said
        (devices,) = [line for line in shown.output.splitlines() if line.startswith("  devices ")]
        assert order.devices and set(order.devices) <= set(devices[10:].split(", ")), devices
        assert "not delivered (the notifier gave up; cityvitals resend" in shown.output
        assert (
            f"{order.dispatch_id} for {order.department} -> http://127.0.0.1:9/sms: "
            "HTTP 503 after 700 attempts over 6 h"
        ) in shown.output
    finally:  # delivered since: owed no more (the audits of later tests count what is owed)
        pipeline.query(
            "INSERT INTO deadletters_resent SELECT kafka_topic, kafka_partition, kafka_offset,"
            " received_at, 'http://127.0.0.1:9/sms', now(), 'itest', 'delivered' FROM deadletters"
            " WHERE (kafka_topic, kafka_partition, kafka_offset) = (%s, %s, %s) RETURNING 1",
            *kept,
        )
    page.click("#incidents tbody tr >> nth=0")  # another detail, then this one again
    row.click()
    expect(page.locator('#detail [data-field="state"]')).to_be_visible()
    expect(page.locator("#detail h3.undelivered")).to_have_count(0)


def test_a_tile_tells_a_window_without_data_from_an_indicator_without_a_value_yet(
    page: Page, pipeline: Pipeline
) -> None:
    """A window that emptied shows 'no data' and the value before it; only an indicator
    that never had a window shows when its first value is due. (Tiles as the console's
    event stream sends them, handed to the page's own handler.)"""
    open_console(page, pipeline, officer(pipeline))
    base = {"place_name": "Pudong", "level": "district", "unit": "cm", "value": None}
    page.evaluate(
        "tiles => tiles.forEach(onTile)",
        [
            {**base, "key": "x/depth", "place_id": "x", "indicator": "depth", "previous": 20.0,
             "quality": "no_data", "band": None, "band_level": None, "coverage": 0},
            {**base, "key": "y/depth", "place_id": "y", "indicator": "depth",
             "due_at": "2026-12-05T08:00:00+00:00"},
        ],
    )  # fmt: skip
    emptied = page.locator('#tiles [data-key="x/depth"] .meta').first
    expect(emptied).to_have_text("no data this window · previous 20")
    pending = page.locator('#tiles [data-key="y/depth"] .meta').first
    expect(pending).to_contain_text("first value due")


def test_a_ratio_tile_reads_as_a_share_and_a_value_without_band_as_its_coverage(
    page: Page, pipeline: Pipeline
) -> None:
    """Devices online as a share (36 %, not 0.3636 ratio), and no stray separator before the
    coverage when the indicator has no band."""
    open_console(page, pipeline, officer(pipeline))
    tile = {"key": "z/devices_online", "place_id": "z", "place_name": "Xihu", "level": "district",
            "indicator": "devices_online", "unit": "ratio", "value": 0.36364, "band": None,
            "band_level": None, "coverage": 0.8, "quality": "good"}  # fmt: skip
    page.evaluate("tile => onTile(tile)", tile)
    drawn = page.locator('#tiles [data-key="z/devices_online"]').first
    expect(drawn.locator(".value")).to_have_text("36")
    expect(drawn.locator(".unit")).to_have_text("%")
    expect(drawn.locator(".meta").first).to_have_text("coverage 80%")


def test_an_escalated_incident_shows_its_missed_limits_in_the_list(
    page: Page, pipeline: Pipeline
) -> None:
    """Escalated, an incident's new tier has a fresh deadline: the row says limits were
    missed, so it does not read as a new incident. (As the event stream sends it.)"""
    open_console(page, pipeline, officer(pipeline))
    base = {"state": "dispatched", "level": "red", "category": "fire", "place_id": "esc-p",
            "title": "fire", "opened_at": "2026-12-06T01:00:00+00:00", "tier": "city",
            "department": "emergency-management"}  # fmt: skip
    page.evaluate(
        "incidents => incidents.forEach(onIncident)",
        [{**base, "incident_id": "e" * 32, "escalations": 1},
         {**base, "incident_id": "f" * 32, "escalations": 0, "tier": "district"}],
    )  # fmt: skip
    escalated = page.locator(f'#incidents tr[data-incident-id="{"e" * 32}"] td.tier')
    expect(escalated).to_have_text("city · 1 missed")
    expect(escalated.locator(".missed")).to_have_attribute(
        "title", "1 limit missed (accept or handle, at this tier or below)"
    )
    expect(page.locator(f'#incidents tr[data-incident-id="{"f" * 32}"] td.tier')).to_have_text(
        "district"
    )


FAN_OUT = """() => {
  state.places.set("fan-p", {place_id: "fan-p", level: "grid", name: "Fan", path: ["fan-p"],
                             lat: 31.2, lon: 121.4});
  const ids = ["a", "b", "c"].map((c) => c.repeat(32));
  for (const id of ids) {
    state.incidents.set(id, {incident_id: id, state: "dispatched", level: "red",
                             category: "flooding", place_id: "fan-p"});
  }
  drawMap();
  drawMarkers();
  return ids.map((id) => {
    const m = document.querySelector(`#map .marker[data-incident-id="${id}"]`);
    return [m.getAttribute("cx"), m.getAttribute("cy")];
  });
}"""


def test_incidents_at_one_place_each_have_a_marker_of_their_own(
    page: Page, pipeline: Pipeline
) -> None:
    """Three incidents at one place fan out around its point: none hides another."""
    open_console(page, pipeline, officer(pipeline))
    positions = page.evaluate(FAN_OUT)
    assert len({tuple(p) for p in positions}) == 3, positions


LEGEND = """() => {
  state.places.set("leg-p", {place_id: "leg-p", level: "grid", name: "Leg", path: ["leg-p"],
                             lat: 31.2, lon: 121.4});
  state.incidents.clear();
  const open = [["a", "red"], ["b", "red"], ["c", "blue"]];
  for (const [c, level] of [...open, ["d", "yellow"]]) {
    state.incidents.set(c.repeat(32), {incident_id: c.repeat(32), level, category: "flooding",
      state: c === "d" ? "closed" : "dispatched", place_id: "leg-p"});
  }
  drawMap();
  drawMarkers();
  // Read in the same task that drew it: a live refresh redraws the legend with new nodes.
  const legend = document.querySelector("#map-legend");
  const spread = [...legend.querySelectorAll(".entry")].map((e) => {
    const range = document.createRange();
    range.selectNodeContents(e);
    const tops = [...range.getClientRects()].map((r) => r.top);
    return Math.max(...tops) - Math.min(...tops);
  });
  return {text: legend.textContent, spread, line: parseFloat(getComputedStyle(legend).fontSize),
          red: getComputedStyle(legend.querySelector(".key.red")).color};
}"""


def test_the_map_legend_says_what_its_colours_mean_and_counts_the_open_incidents(
    page: Page, pipeline: Pipeline
) -> None:
    """Each level's colour, with how many open incidents the map shows at it (a closed one
    has no marker), and what the places' dots are."""
    open_console(page, pipeline, officer(pipeline))
    page.set_viewport_size({"width": 1440, "height": 900})
    legend = page.evaluate(LEGEND)
    assert legend["text"] == (
        "open incidents on the map: ● 2 red ● 0 orange ● 0 yellow ● 1 blue"
        " · places: ● district • street, grid, building"
    )
    assert legend["red"] == "rgb(239, 68, 68)"
    # However the legend wraps, a dot stays on the line of its words: within an entry, the
    # boxes' tops differ by less than a line (a wrap moves the words a whole line down).
    spread, line = legend["spread"], legend["line"]
    assert len(spread) == 6 and 0 <= max(spread) < line, (spread, line)


def test_the_devices_panel_shows_an_outage_and_its_silent_devices(
    page: Page, pipeline: Pipeline
) -> None:
    """Three water sensors of a grid report every second, then fall silent: the devices
    panel of an officer of their city counts them offline, names the place's outage and lists
    each device, with how long since it was last heard, no reload needed."""
    from tests.integration.test_liveness import publish_rounds

    tag = uuid.uuid4().hex[:6]
    city, district = f"dv{tag}", f"dv{tag}d"
    grid = f"{city}/{district}/{district}s/{district}g"
    devices = [pipeline.register("water_level", grid) for _ in range(3)]
    open_console(page, pipeline, officer(pipeline, (city,)))  # their city alone
    expect(page.locator("#no-silent")).to_be_visible()  # registered, not heard yet
    publish_rounds(pipeline, devices, rounds=5)
    counts = page.locator("#device-counts")
    expect(counts).to_have_text("3 offline · 0 late · 0 online", timeout=SHOWS_UP_MS)
    expect(page.locator("#outages li")).to_contain_text("3 of 3 silent since", timeout=30_000)
    rows = page.locator("#silent li")
    expect(rows).to_have_count(3)
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.deviceId)")) == sorted(
        d for d, _ in devices
    )
    expect(rows.first.locator(".status")).to_have_text("offline")
    expect(rows.first.locator(".seen")).to_contain_text("ago")
    expect(page.locator("#no-silent")).to_be_hidden()

    # A silent device, opened from the list: what it last sent, its readings, its liveness.
    first = rows.first.get_attribute("data-device-id")
    rows.first.locator("button.link").click()
    expect(page.locator("#detail-kind")).to_have_text("Device")
    expect(page.locator("#detail-title")).to_have_text(str(first))
    expect(page.locator('#detail [data-field="liveness"]')).to_contain_text("offline")
    expect(page.locator('#detail [data-field="refused"]')).to_have_text("0 in the last 7 days")
    expect(page.locator('#detail .latest [data-metric="water_level_cm"]')).to_contain_text(
        "water_level_cm 2 · "
    )
    expect(page.locator("#detail .series circle")).to_have_count(5)  # its five readings
    # The range of its values and of the time the chart spans, in the city's hours.
    expect(page.locator("#detail .series .note").last).to_have_text(
        re.compile(r"2 – 2 · \d\d:\d\d → \d\d:\d\d")
    )
    expect(page.locator("#actions")).to_be_hidden()  # nothing to act on
    page.screenshot(path=str(ARTIFACTS / "console-device.png"), full_page=True)
    # Any device by its id, and one the registry does not know says so.
    second = next(d for d, _ in devices if d != first)
    page.fill("#device-id", second)
    page.click('#device-find button[type="submit"]')
    expect(page.locator("#detail-title")).to_have_text(second)
    expect(page.locator('#detail [data-field="place"]')).to_contain_text(f"{district}g")
    page.fill("#device-id", f"{city}-nowhere")
    page.click('#device-find button[type="submit"]')
    expect(page.locator("#detail .error")).to_contain_text(f"{city}-nowhere")
    # An open device's view follows what it sends, no click needed.
    page.fill("#device-id", str(first))
    page.click('#device-find button[type="submit"]')
    expect(page.locator("#detail .series circle")).to_have_count(5)
    secret = dict(devices)[str(first)]
    sent = pipeline.mosquitto_pub(
        str(first), secret, pipeline.topic(str(first)),
        reading(datetime.now(UTC).isoformat(), 99, water_level_cm=4.5),
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    expect(page.locator('#detail .latest [data-metric="water_level_cm"]')).to_contain_text(
        "water_level_cm 4.5 · ", timeout=30_000
    )
    expect(page.locator("#detail .series circle")).to_have_count(6)


CROWDED = """() => {
  state.places.clear();
  const near = [["lab-a", "Xuhui", 31.2000, 121.4000], ["lab-b", "Huangpu", 31.2003, 121.4004],
                ["lab-c", "Minhang", 31.1000, 121.3000]];
  for (const [id, name, lat, lon] of near) {
    state.places.set(id, {place_id: id, level: "district", name, path: ["sh", id], lat, lon});
  }
  drawMap();
  const labels = [...document.querySelectorAll("#map text.label")].map((t) => t.textContent);
  const titles = [...document.querySelectorAll("#map circle.place title")].map((t) => t.textContent);
  return [labels, titles];
}"""


def test_map_labels_that_would_overlap_give_way_and_their_dots_keep_their_names(
    page: Page, pipeline: Pipeline
) -> None:
    """Two districts a few metres apart: one label is drawn, not two on top of each other;
    each dot still names its place when pointed at."""
    open_console(page, pipeline, officer(pipeline))
    labels, titles = page.evaluate(CROWDED)
    assert sorted(labels) == ["Huangpu", "Minhang"], labels  # Xuhui gives way, by name order
    assert sorted(titles) == ["Huangpu (lab-b)", "Minhang (lab-c)", "Xuhui (lab-a)"]


def test_a_city_s_label_is_the_map_s_caption_not_over_a_district(
    page: Page, pipeline: Pipeline
) -> None:
    """The city's centre fell on a district's, and its label took the district's place: it is
    the map's caption now, in its corner, and the district keeps its name."""
    open_console(page, pipeline, officer(pipeline))
    labels = page.evaluate("""() => {
      state.places.clear();
      state.places.set("cap-c", {place_id: "cap-c", level: "city", name: "Simulated City",
                                 path: ["cap-c"], lat: 31.2, lon: 121.4});
      state.places.set("cap-d", {place_id: "cap-d", level: "district", name: "District 2",
                                 path: ["cap-c", "cap-d"], lat: 31.2, lon: 121.4});
      state.places.set("cap-e", {place_id: "cap-e", level: "district", name: "District 1",
                                 path: ["cap-c", "cap-e"], lat: 31.3, lon: 121.5});
      drawMap();
      return [...document.querySelectorAll("#map text.label")].map(
        (t) => [t.textContent, t.classList.contains("caption")]);
    }""")
    assert sorted(labels) == [
        ["District 1", False],
        ["District 2", False],
        ["Simulated City", True],
    ]


def long_named(minutes_left: float) -> list[dict[str, Any]]:
    """Two incidents as the event stream sends them, with long names (a city-tier
    department, who acknowledged it, a long place), the one due ``minutes_left`` from now by
    this machine's clock (the server's: the test runs beside it), opened 19 minutes ago
    (an age of "19m 04s")."""
    due = (datetime.now(UTC) + timedelta(minutes=minutes_left)).isoformat()
    opened = (datetime.now(UTC) - timedelta(minutes=19, seconds=4)).isoformat()
    base = {"state": "dispatched", "level": "orange", "category": "flooding",
            "place_id": "a-street-whose-id-is-long-enough-to-wrap", "title": "flooding",
            "opened_at": opened, "tier": "city", "escalations": 2,
            "department": "emergency-management", "accept_by": due,
            "acknowledged_by": "maya (duty_officer)"}  # fmt: skip
    return [{**base, "incident_id": c * 32} for c in "ab"]


def test_on_a_laptop_the_time_left_is_in_sight_whatever_the_names(
    browser: Browser, pipeline: Pipeline
) -> None:
    """At 1366x768 and 1400x1000, rows with a long department and who acknowledged them cut
    the last column, the time left, to "acce": it comes second now, whole and inside the
    panel whatever the other rows hold, and long names give way. At 1280x720 the last
    column, the age, was cut ("19m 04"): every column is inside the panel."""
    token = officer(pipeline)
    for width, height in ((1280, 720), (1366, 768), (1400, 1000)):
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        open_console(page, pipeline, token)
        page.evaluate("incidents => incidents.forEach(onIncident)", long_named(9))
        sla = page.locator(f'#incidents tr[data-incident-id="{"a" * 32}"] td.sla')
        expect(sla).to_contain_text("accept in 8m")
        whole, shown = sla.evaluate("td => [td.scrollWidth, td.clientWidth]")
        assert whole <= shown, (width, whole, shown)
        panel = page.locator(".incidents-panel")
        box, room = sla.bounding_box(), panel.bounding_box()
        assert box is not None and room is not None
        assert box["x"] + box["width"] <= room["x"] + room["width"], (width, box, room)
        department = page.locator(f'#incidents tr[data-incident-id="{"a" * 32}"] td.department')
        expect(department).to_have_attribute("title", "emergency-management")
        age = page.locator(f'#incidents tr[data-incident-id="{"a" * 32}"] td.age')
        whole, shown = age.evaluate("td => [td.scrollWidth, td.clientWidth]")
        edge = age.bounding_box()
        assert edge is not None and whole <= shown, (width, whole, shown)
        assert edge["x"] + edge["width"] <= room["x"] + room["width"], (width, edge, room)
        context.close()


def test_countdowns_go_by_the_server_s_clock_and_a_drifting_workstation_is_told(
    browser: Browser, pipeline: Pipeline
) -> None:
    """A workstation 12 minutes fast showed an order due in 9 minutes as "accept late 2m
    47s": the console now counts by the server's time (the stream's hello) and says the
    workstation's clock is off."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.clock.install(time=datetime.now(UTC) + timedelta(minutes=12))
    page.clock.resume()
    open_console(page, pipeline, officer(pipeline))
    expect(page.locator("#clock-skew")).to_be_visible()
    expect(page.locator("#clock-skew")).to_contain_text("ahead of the server's")
    page.evaluate("incidents => incidents.forEach(onIncident)", long_named(9))
    sla = page.locator(f'#incidents tr[data-incident-id="{"a" * 32}"] td.sla')
    expect(sla).to_contain_text("accept in 8m")
    expect(sla).not_to_have_class("sla late")
    context.close()


def test_a_row_shows_the_level_its_alerts_fire_at_now_beside_its_peak(
    page: Page, pipeline: Pipeline, admin_token: str
) -> None:
    """A flood at 30 cm (orange) falls to 8 cm (blue): the row's level stays its peak, and
    says "now blue" beside it (the header said no orange fired while the row read orange). Said
    handled while the blue alert still fires, no limit runs: the row says so instead of "–"."""
    street = Street(pipeline)
    sensor = street.sensor(0)
    street.water(sensor, 30.0)
    open_console(page, pipeline, officer(pipeline))
    row = incident_row(page, street.street)
    expect(row.locator(".level")).to_have_text("orange", timeout=SHOWS_UP_MS)
    expect(row.locator(".now")).to_have_count(0)  # the peak is the level now
    street.water(sensor, 8.0)
    expect(row.locator(".now")).to_have_text("now blue", timeout=SHOWS_UP_MS)
    expect(row.locator(".level")).to_have_text("orange")
    incident_id = row.get_attribute("data-incident-id")
    with api_client(pipeline.settings, admin_token) as api:
        for action in ("accept", "handled"):
            sent = api.post(f"/incidents/{incident_id}/actions", json={"action": action})
            assert sent.status_code == 202, sent.text
            expect(row).to_have_attribute(
                "data-state", "accepted" if action == "accept" else "handled",
                timeout=SHOWS_UP_MS,
            )  # fmt: skip
    expect(row.locator("td.sla")).to_have_text("handled, still blue")
    expect(row.locator("td.sla")).to_have_class("sla firing")
    row.click()  # the limits answered in time say so ("ended: handled" said neither)
    expect(page.locator('#detail [data-field="accept_by"]')).to_contain_text("· met, accepted ")
    expect(page.locator('#detail [data-field="handle_by"]')).to_contain_text("· met, handled ")


def test_signals_joining_in_a_row_are_one_line_of_the_timeline(
    page: Page, pipeline: Pipeline
) -> None:
    """A flood's five sensors and its camera join the incident one after another: their
    attach steps are one line ("attach ×5"), so the steps people took stay in sight (9 of a
    flood's 16 lines were attach steps)."""
    from tests.integration.test_incidents import flood

    open_console(page, pipeline, officer(pipeline))
    street = Street(pipeline)
    flood(street)
    row = incident_row(page, street.street)
    expect(row).to_be_visible(timeout=SHOWS_UP_MS)
    wait_for(
        lambda: len(pipeline.query(
            "SELECT 1 FROM incident_transitions t JOIN incidents i USING (incident_id) "
            "WHERE i.place_id = %s AND t.action = 'attach'", street.street,
        )) >= 3,
        timeout=SHOWS_UP_MS / 1000,
        what="three signals joined",
    )  # fmt: skip
    row.click()
    attached = page.locator('#detail .timeline li[data-action="attach"]')
    expect(attached.first).to_contain_text("attach ×", timeout=10_000)
    assert attached.count() < 3
    expect(page.locator('#detail .timeline li[data-action="open"]')).to_be_visible()


def test_a_duty_officer_takes_a_hotline_call_from_the_page(page: Page, pipeline: Pipeline) -> None:
    """A caller reports a fallen tree: the duty officer sends it from the console (it took
    the API before), and its incident comes into the list; a report the API refuses says why."""
    street = Street(pipeline)
    street.sensor(0)  # its street is a place of the registry now
    open_console(page, pipeline, officer(pipeline))
    page.click("#report summary")
    page.select_option("#report-place", street.street)
    page.select_option("#report-category", "general")
    page.fill("#report-text", "hotline: a fallen tree blocks the road")
    page.click('#report-form button[type="submit"]')
    expect(page.locator("#report-result")).to_contain_text("sent: its incident comes into the list")
    row = incident_row(page, street.street)
    expect(row).to_be_visible(timeout=SHOWS_UP_MS)
    expect(row.locator("td.category")).to_have_text("general")
    (text,) = pipeline.query(
        "SELECT text FROM reports WHERE place_path[array_length(place_path, 1)] = %s",
        street.street,
    )[0]
    assert text == "hotline: a fallen tree blocks the road"
    page.evaluate("""() => document.querySelector("#report-category").append(
        Object.assign(document.createElement("option"), {value: "nonesuch", text: "x"}))""")
    page.select_option("#report-category", "nonesuch")
    page.fill("#report-text", "a category the configuration does not have")
    page.click('#report-form button[type="submit"]')
    expect(page.locator("#report-result")).to_contain_text("no category 'nonesuch'")


def test_a_reopened_incident_s_age_counts_from_its_reopening(
    page: Page, pipeline: Pipeline, admin_token: str
) -> None:
    """Reopened, an incident's age counted from its first opening: a flood reopened a minute
    ago read as half an hour unattended. It counts from the reopening now, marked ↺."""
    open_console(page, pipeline, officer(pipeline))
    street = flooded(pipeline)
    row = incident_row(page, street.street)
    expect(row).to_be_visible(timeout=SHOWS_UP_MS)
    incident_id = row.get_attribute("data-incident-id")
    expect(row.locator("td.age")).not_to_contain_text("↺")
    with api_client(pipeline.settings, admin_token) as api:
        for action, state in (("close", "closed"), ("reopen", "dispatched")):
            body = {"action": action, "reason": f"{action} from a test"}
            sent = api.post(f"/incidents/{incident_id}/actions", json=body)
            assert sent.status_code == 202, sent.text
            expect(row).to_have_attribute("data-state", state, timeout=SHOWS_UP_MS)
            if state == "closed":  # open no more: its age does not count on
                expect(row.locator("td.age")).to_have_text("closed")
                expect(row.locator("td.age")).to_have_attribute(
                    "title", re.compile(r"^closed; last step .*; opened ")
                )
    expect(row.locator("td.age")).to_contain_text("↺")
    expect(row.locator("td.age")).to_have_attribute("title", re.compile(r"^reopened .*; opened "))


def test_a_tile_names_the_window_its_value_is_of(page: Page, pipeline: Pipeline) -> None:
    """A 5-minute window's deepest water is shown until the next is reported: the tile says
    which window (in the city's zone) beside how long ago it ended."""
    open_console(page, pipeline, officer(pipeline))
    page.evaluate(
        "tile => onTile(tile)",
        {"key": "tw-p/water_depth", "place_id": "tw-p", "place_name": "Window St",
         "level": "street", "indicator": "water_depth", "value": 45.9, "unit": "cm",
         "band": "road_closed", "band_level": "red", "coverage": 1.0, "quality": "good",
         "window_start": "2026-12-07T04:30:00+00:00", "window_end": "2026-12-07T04:35:00+00:00",
         "window_s": 300, "previous": 40.0, "trend": "up"},
    )  # fmt: skip
    zone = page.evaluate("() => state.config.timezone")
    start = datetime(2026, 12, 7, 4, 30, tzinfo=UTC).astimezone(ZoneInfo(zone))
    end = start + timedelta(minutes=5)
    age = page.locator('.tile[data-key="tw-p/water_depth"] .age')
    expect(age).to_contain_text(f"{start:%H:%M}–{end:%H:%M}, ended ")
    expect(age).to_contain_text(" ago")
    meta = page.locator('.tile[data-key="tw-p/water_depth"] .meta').first
    expect(meta).to_have_text("road closed · coverage 100%")  # the band in words, not its id


def test_a_district_officer_does_not_see_another_districts_incident(
    page: Page, pipeline: Pipeline
) -> None:
    mine, other = Street(pipeline), flooded(pipeline)
    sensor = mine.sensor(0)  # its district exists from here on
    district = tuple(mine.base.split("/")[:2])
    token = officer(pipeline, district)
    other_id = wait_for(
        lambda: pipeline.query(
            "SELECT incident_id FROM incidents WHERE place_id = %s", other.street
        ),
        timeout=SHOWS_UP_MS / 1000,
        what="the other district's incident in the database",
    )[0][0]
    page.goto(f"{base_url(pipeline)}/console")  # no token: the login box
    page.fill("#token", token)
    page.click("#login-button")
    with open_registry(pipeline.settings) as registry:
        names = {p.place_id: p.name for p in registry.list_places()}
    # its scope by name (the city above its district too), the ids it is written in beside
    expect(page.locator("#scope")).to_have_text(" / ".join(names[p] for p in district))
    expect(page.locator("#scope")).to_have_attribute("title", "/".join(district))
    expect(page.locator("#live")).to_have_text("live")
    mine.water(sensor, 8.0)
    expect(incident_row(page, mine.street)).to_be_visible(timeout=SHOWS_UP_MS)
    # the stream had the other incident before this one: had it been sent, it would be here
    expect(page.locator(f'#incidents tr[data-incident-id="{other_id}"]')).to_have_count(0)
    expect(incident_row(page, other.street)).to_have_count(0)
    assert page.locator("#incidents tbody tr").count() == 1
    status = page.evaluate(f"fetch('/incidents/{other_id}').then((r) => r.status)")
    assert status == 403


def mapped_street(pipeline: Pipeline, admin_token: str) -> Street:
    """A street whose city, district and street have coordinates, so the map can draw it."""
    street = Street(pipeline)
    n = uuid.uuid4().hex[:6]
    city, district = f"map{n}", f"map{n}-d1"
    with api_client(pipeline.settings, admin_token) as admin:
        for place_id, body in (
            (city, {"name": "Map City", "lat": 31.23, "lon": 121.47}),
            (district, {"name": "Riverside", "parent_id": city, "lat": 31.20, "lon": 121.40}),
            (
                street.street,
                {"name": "Canal Street", "parent_id": district, "lat": 31.21, "lon": 121.42},
            ),
        ):
            answer = admin.put(f"/places/{place_id}", json=body)
            assert answer.status_code == 201, answer.text
    street.base = f"{city}/{district}/{street.street}"
    return street


def test_a_place_without_coordinates_is_mapped_where_its_devices_are(
    page: Page, pipeline: Pipeline
) -> None:
    """A street registered without coordinates, its gauge with them: its incident's marker
    stands at the gauge (the places' own coordinates alone listed it as not on the map)."""
    street = Street(pipeline)
    device = street.sensor(0)
    with db.connect(pipeline.settings) as conn:
        conn.execute(
            "UPDATE devices SET lat = 31.2, lon = 121.4 WHERE device_id = %s", (device[0],)
        )
    street.water(device, 8.0)
    open_console(page, pipeline, officer(pipeline, tuple(street.base.split("/")[:2])))
    row = incident_row(page, street.street)
    expect(row).to_be_visible(timeout=SHOWS_UP_MS)
    marker = page.locator(
        f'#map .marker[data-incident-id="{row.get_attribute("data-incident-id")}"]'
    )
    expect(marker).to_have_count(1)
    expect(page.locator("#unmapped")).to_have_text("")


def test_screenshots_of_the_console_are_written_to_the_artefacts(
    browser: Browser, pipeline: Pipeline, admin_token: str
) -> None:
    street = mapped_street(pipeline, admin_token)
    token = officer(pipeline, (street.base.split("/")[0],))
    for _ in range(3):
        street.water(street.sensor(0), 30.0)  # past the 25 cm joint-action depth
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for screen, size in (("phone", (400, 800)), ("laptop", (1366, 768)), ("wall", (2560, 1440))):
        context = browser.new_context(viewport={"width": size[0], "height": size[1]})
        page = context.new_page()
        open_console(page, pipeline, token)
        row = incident_row(page, street.street)
        expect(row).to_be_visible(timeout=SHOWS_UP_MS)
        row.click()
        expect(
            page.locator(
                f'#map .marker[data-incident-id="{row.get_attribute("data-incident-id")}"]'
            )
        ).to_have_count(1)
        expect(page.locator("#detail .timeline li").first).to_be_visible()
        shot = ARTIFACTS / f"console-{screen}.png"
        page.screenshot(path=str(shot), full_page=True)
        context.close()
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"console screenshot: {shot}")


def test_a_phone_shows_every_cell_of_an_incident_and_a_laptop_keeps_the_map_in_reach(
    browser: Browser, pipeline: Pipeline, admin_token: str
) -> None:
    """At 400 px each incident is a card naming each cell, none off the side (the table was
    622 px in a 379 px panel: State, Seen by, Age and SLA out of sight); at 1280x720 a long
    incident scrolls in its panel and the map stays under it, not 2,500 px down."""
    street = mapped_street(pipeline, admin_token)
    token = officer(pipeline, (street.base.split("/")[0],))
    street.water(street.sensor(0), 30.0)
    for width, height in ((400, 800), (1280, 720)):
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        open_console(page, pipeline, token)
        row = incident_row(page, street.street)
        expect(row).to_be_visible(timeout=SHOWS_UP_MS)
        if width == 400:
            panel = page.locator(".incidents-panel")
            wide, room = panel.evaluate("p => [p.scrollWidth, p.clientWidth]")
            assert wide <= room, (wide, room)
            sla = row.locator("td.sla").bounding_box()
            assert sla is not None and sla["x"] + sla["width"] <= width
            # Read from the live row: a refresh may redraw it between a lookup and a read.
            cell = (
                f'#incidents tr[data-incident-id="{row.get_attribute("data-incident-id")}"] td.sla'
            )
            label = page.wait_for_function(
                "s => { const td = document.querySelector(s);"
                " return td && getComputedStyle(td, '::before').content; }",
                arg=cell,
            )
            assert label.json_value() == '"SLA"'
        else:
            row.click()
            expect(page.locator("#detail .timeline li").first).to_be_visible()
            detail = page.locator(".detail-panel").bounding_box()
            where = page.locator(".map-panel").bounding_box()
            assert detail is not None and where is not None
            assert detail["height"] <= 0.6 * height + 1
            assert where["y"] <= detail["y"] + detail["height"] + 20  # just under it
        context.close()
