-- Status management, usage statistics and charging (004 §5.5.3, §5.5.4, CPNS-4;
-- docs/device-status.md).

-- Each entity's status of record and the numeric attributes policies look at, in its own row of
-- `entities` (a status write touches one B-tree, as the capabilities it comes with: ARCHITECTURE
-- decision 24). `status_code` is the wire code of `cpns_wire::Status` (an unknown code is kept:
-- a newer peer's status); NULL means never reported (shown offline). `reported_by`: the PN GW
-- whose session reported a PNE, so the end of that session can turn it offline. (The column
-- `status` of schema 1 holds the PN GW's status as text from before and is no longer written.)
ALTER TABLE entities ADD COLUMN status_code INTEGER;
ALTER TABLE entities ADD COLUMN label TEXT;
ALTER TABLE entities ADD COLUMN status_since INTEGER;
ALTER TABLE entities ADD COLUMN reported_by TEXT;
ALTER TABLE entities ADD COLUMN battery_pct INTEGER;
ALTER TABLE entities ADD COLUMN battery_minutes INTEGER;
ALTER TABLE entities ADD COLUMN free_memory_mb INTEGER;

CREATE INDEX entities_reported_by ON entities (reported_by) WHERE reported_by IS NOT NULL;

-- Status subscriptions of entities (a PN GW for itself, a PNE through its PN GW): they outlive
-- sessions and restarts. `entities` is the watched ids separated by spaces (ids never hold
-- one), empty for every device of `owner`; `policy` is the CBOR of `cpns_wire::StatusPolicy`.
-- A retried subscription (same subscriber and request id) finds its row.
CREATE TABLE status_subscriptions (
    id          INTEGER NOT NULL PRIMARY KEY,
    subscriber  TEXT    NOT NULL REFERENCES entities (id),
    owner       TEXT    NOT NULL,
    request_id  INTEGER NOT NULL,
    entities    TEXT    NOT NULL,
    policy      BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (subscriber, request_id)
) STRICT;
-- The UNIQUE index leads with the subscriber: counting a subscriber's subscriptions reads it.

-- Usage records the server received (004 §5.5.4), appended in arrival order; a record is kept
-- once per (entity, record id), so a retried report stores nothing twice. `audience`: 1 the
-- server only, 2 shared with external applications (`cpns_wire::Audience`).
CREATE TABLE usage_records (
    seq           INTEGER NOT NULL PRIMARY KEY,
    entity_id     TEXT    NOT NULL,
    record_id     INTEGER NOT NULL,
    owner         TEXT    NOT NULL,
    pn_id         BLOB    CHECK (pn_id IS NULL OR length(pn_id) = 16),
    service       TEXT    NOT NULL,
    start_s       INTEGER NOT NULL,
    end_s         INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    audience      INTEGER NOT NULL,
    status        INTEGER,
    battery_start INTEGER,
    battery_end   INTEGER,
    networks      TEXT    NOT NULL,
    received_at   INTEGER NOT NULL,
    UNIQUE (entity_id, record_id)
) STRICT;

CREATE INDEX usage_records_owner ON usage_records (owner, service);

-- Charging records (CPNS-4): chargeable use, charged to the consuming entity's owner (`user`),
-- with the PN's owner when that is another user (001 §5.2.1.1). Written in the same
-- transaction as the usage record it comes from, and only when that record is new.
CREATE TABLE charging_records (
    seq        INTEGER NOT NULL PRIMARY KEY,
    user       TEXT    NOT NULL,
    entity_id  TEXT    NOT NULL,
    pn_id      BLOB    CHECK (pn_id IS NULL OR length(pn_id) = 16),
    pn_owner   TEXT,
    service    TEXT    NOT NULL,
    start_s    INTEGER NOT NULL,
    end_s      INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    units      INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX charging_records_user ON charging_records (user, start_s);

-- A PNE's own usage records, as collected (004 §5.5.4.2), and whether the server acknowledged
-- them. Private ones are never sent; all count in the device's own summary.
CREATE TABLE local_usage (
    record_id     INTEGER NOT NULL PRIMARY KEY,
    service       TEXT    NOT NULL,
    start_s       INTEGER NOT NULL,
    end_s         INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    status        INTEGER,
    battery_start INTEGER,
    battery_end   INTEGER,
    networks      TEXT    NOT NULL,
    sent          INTEGER NOT NULL DEFAULT 0 CHECK (sent IN (0, 1))
) STRICT;

CREATE INDEX local_usage_unsent ON local_usage (record_id) WHERE sent = 0;

-- The user's reporting preference per service (004 §5.5.4.2): `private`, `server`, `shared`.
CREATE TABLE usage_prefs (
    service    TEXT NOT NULL PRIMARY KEY,
    preference TEXT NOT NULL
) STRICT;
