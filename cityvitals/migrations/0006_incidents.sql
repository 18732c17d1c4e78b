-- Incidents, their transitions, dispatch orders, escalations and citizen reports (see
-- docs/incidents.md). Written by the sinks (sinks/incident_sinks.py), one writer each; every
-- write is an upsert on a natural key, so a replayed Kafka message changes nothing. Read by
-- sinks/incidents.py for the CLI and the API. Plain tables in both flavours: a few rows per
-- incident, updated in place by incident_id (like alerts).

-- The latest revision of each incident: an upsert never replaces a higher revision.
CREATE TABLE incidents (
    incident_id    text PRIMARY KEY,
    revision       integer NOT NULL,
    category       text NOT NULL,
    state          text NOT NULL CHECK (state IN ('new', 'dispatched', 'accepted', 'on_site',
                                                  'handled', 'verified', 'closed')),
    level          text NOT NULL CHECK (level IN ('blue', 'yellow', 'orange', 'red')),
    source         text NOT NULL CHECK (source IN ('alert', 'outage', 'report')),
    place_id       text NOT NULL,
    place_path     text[] NOT NULL,
    title          text NOT NULL,
    tier           text CHECK (tier IN ('street', 'district', 'city')),
    department     text,
    dispatch_id    text,
    opened_at      timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    accept_by      timestamptz,
    handle_by      timestamptz,
    alerts         text[] NOT NULL DEFAULT '{}',
    open_alerts    integer NOT NULL DEFAULT 0,
    devices        text[] NOT NULL DEFAULT '{}',
    reports        text[] NOT NULL DEFAULT '{}',
    muted          integer NOT NULL DEFAULT 0,
    flaps          integer NOT NULL DEFAULT 0,
    escalations    integer NOT NULL DEFAULT 0,
    snapshot_refs  text[] NOT NULL DEFAULT '{}'
);
-- Newest first, the open ones, under a place, by category or department; a report's incident.
CREATE INDEX incidents_opened ON incidents (opened_at DESC);
CREATE INDEX incidents_open ON incidents (opened_at DESC) WHERE state <> 'closed';
CREATE INDEX incidents_place_gin ON incidents USING gin (place_path);
CREATE INDEX incidents_reports_gin ON incidents USING gin (reports);
CREATE INDEX incidents_category ON incidents (category, opened_at DESC);
CREATE INDEX incidents_department ON incidents (department, tier);

-- Every step of every incident: who, when, why.
CREATE TABLE incident_transitions (
    incident_id  text NOT NULL,
    revision     integer NOT NULL,
    action       text NOT NULL,
    from_state   text,
    to_state     text NOT NULL,
    actor        text NOT NULL,
    reason       text NOT NULL DEFAULT '',
    ts           timestamptz NOT NULL,
    tier         text,
    department   text,
    PRIMARY KEY (incident_id, revision)
);
-- The accept and handled steps of an incident in time order (on-time rates).
CREATE INDEX incident_transitions_action ON incident_transitions (incident_id, action, ts);

-- Dispatch orders as sent on `dispatch` (a digest lists its incidents, the first is incident_id).
CREATE TABLE dispatches (
    dispatch_id    text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('order', 'escalation', 'reassignment', 'digest')),
    incident_id    text NOT NULL,
    incidents      text[] NOT NULL DEFAULT '{}',
    department     text NOT NULL,
    tier           text NOT NULL CHECK (tier IN ('street', 'district', 'city')),
    tier_place_id  text NOT NULL,
    category       text NOT NULL,
    level          text NOT NULL CHECK (level IN ('blue', 'yellow', 'orange', 'red')),
    place_id       text NOT NULL,
    place_path     text[] NOT NULL,
    title          text NOT NULL,
    accept_by      timestamptz NOT NULL,
    handle_by      timestamptz NOT NULL,
    ts             timestamptz NOT NULL
);
CREATE INDEX dispatches_incident ON dispatches (incident_id, ts);
CREATE INDEX dispatches_incidents_gin ON dispatches USING gin (incidents);
CREATE INDEX dispatches_ts ON dispatches (ts);

-- A tier ran out of time (to_tier NULL: the city tier itself).
CREATE TABLE escalations (
    incident_id  text NOT NULL,
    from_tier    text NOT NULL CHECK (from_tier IN ('street', 'district', 'city')),
    to_tier      text CHECK (to_tier IN ('street', 'district', 'city')),
    department   text,
    breach       text NOT NULL CHECK (breach IN ('accept', 'handle')),
    deadline     timestamptz NOT NULL,
    dispatch_id  text,
    ts           timestamptz NOT NULL,
    PRIMARY KEY (incident_id, ts, from_tier)
);
CREATE INDEX escalations_ts ON escalations (ts);

-- Citizen reports (no names, no phone numbers: photo_ref points to an image kept elsewhere).
CREATE TABLE reports (
    report_id    text PRIMARY KEY,
    channel      text NOT NULL CHECK (channel IN ('hotline', 'photo', 'app', 'officer')),
    category     text NOT NULL,
    place_path   text[] NOT NULL,
    text         text NOT NULL,
    photo_ref    text,
    level        text NOT NULL CHECK (level IN ('blue', 'yellow', 'orange', 'red')),
    lat          double precision,
    lon          double precision,
    reported_at  timestamptz NOT NULL
);
CREATE INDEX reports_reported ON reports (reported_at DESC);
CREATE INDEX reports_category ON reports (category, reported_at DESC);
