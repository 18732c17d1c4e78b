-- Users of the API and the console: a role, a place scope (a place path prefix; '{}' is the
-- whole city) and, for a department operator, its department. Written by the registry
-- (device_registry/repositories/users.py); every change is in audit_log.
--
-- A token is stored only as its SHA-256 (hex). Tokens are 32 random bytes
-- (secrets.token_urlsafe(32)), so no dictionary or brute force reaches them and a plain hash
-- is enough: no salt, no slow hash. The lookup is by hash; the comparison is constant-time.

CREATE TABLE users (
    user_id      text PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    role         text NOT NULL CHECK (role IN ('admin', 'iot_engineer', 'duty_officer',
                                               'department_operator', 'read_only')),
    scope        text[] NOT NULL DEFAULT '{}',
    department   text,
    token_hash   text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz,
    CHECK ((role = 'department_operator') = (department IS NOT NULL))
);
