-- mailsflux database schema.
--
-- Applied through PRAGMA user_version: each `-- migration: N` section below is one step and
-- runs once, in order, in its own transaction. Released steps are never edited; a change is a
-- new section at the end. Times are Unix seconds (UTC); ids are a type prefix + a ULID, so
-- ordering by id is ordering by creation. Every row made through the API carries `mode`
-- ('live' or 'test') and every query filters on it: the two modes never see each other.

-- migration: 1

-- Key/value settings owned by the server itself (the server secret, ...).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- API keys. Only the SHA-256 of the key is kept; `prefix` is the first characters, shown
-- in listings so a person can tell keys apart.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    mode         TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    permission   TEXT NOT NULL CHECK (permission IN ('full_access', 'sending_access')),
    token_hash   BLOB NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT;

-- One row per accepted email. `raw` is the MIME message as it will be sent (signed, when a
-- DKIM key applies); recipients of an audience send may carry their own copy instead.
CREATE TABLE emails (
    id            TEXT PRIMARY KEY,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    type          TEXT NOT NULL CHECK (type IN ('transactional', 'marketing')),
    status        TEXT NOT NULL,
    from_header   TEXT NOT NULL,
    from_address  TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    subject       TEXT NOT NULL,
    to_json       TEXT NOT NULL,
    cc_json       TEXT NOT NULL,
    bcc_json      TEXT NOT NULL,
    reply_to_json TEXT NOT NULL,
    tags_json     TEXT NOT NULL,
    headers_json  TEXT NOT NULL,
    html          TEXT,
    text          TEXT,
    raw           BLOB,
    message_id    TEXT NOT NULL,
    template_id   TEXT,
    audience_id   TEXT,
    track_opens   INTEGER NOT NULL DEFAULT 0,
    track_clicks  INTEGER NOT NULL DEFAULT 0,
    api_key_id    TEXT,
    created_at    INTEGER NOT NULL,
    queued_at     INTEGER,
    scheduled_at  INTEGER
) STRICT;
CREATE INDEX emails_by_mode ON emails (mode, id DESC);
CREATE INDEX emails_by_status ON emails (mode, status, id DESC);
CREATE INDEX emails_by_from ON emails (mode, from_address, id DESC);

-- One row per recipient of an email: the delivery queue. A row is due when its status is
-- queued, deferred or scheduled and `next_attempt_at` has passed; a worker claims it by
-- setting status 'sending' and a lease, and a lease that expires (a crash) puts it back.
CREATE TABLE recipients (
    id              INTEGER PRIMARY KEY,
    email_id        TEXT NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    mode            TEXT NOT NULL,
    address         TEXT NOT NULL,
    address_lower   TEXT NOT NULL,
    domain          TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('to', 'cc', 'bcc')),
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_response   TEXT,
    next_attempt_at INTEGER,
    lease_until     INTEGER,
    updated_at      INTEGER NOT NULL,
    raw             BLOB,
    contact_id      TEXT
) STRICT;
CREATE INDEX recipients_by_email ON recipients (email_id, id);
CREATE INDEX recipients_due ON recipients (next_attempt_at)
    WHERE status IN ('queued', 'deferred', 'scheduled');
CREATE INDEX recipients_leased ON recipients (lease_until) WHERE status = 'sending';
CREATE INDEX recipients_by_address ON recipients (mode, address_lower, email_id);

-- Every event of every object. It is also the webhooks' outbox: an event is written in the
-- same transaction as the change it records, so none is lost and none is invented.
CREATE TABLE events (
    id          TEXT PRIMARY KEY,
    mode        TEXT NOT NULL,
    type        TEXT NOT NULL,
    email_id    TEXT,
    mail_id     TEXT,
    recipient   TEXT,
    detail      TEXT,
    data_json   TEXT,
    occurred_at INTEGER NOT NULL
) STRICT;
CREATE INDEX events_by_email ON events (email_id, id) WHERE email_id IS NOT NULL;
CREATE INDEX events_by_mail ON events (mail_id, id) WHERE mail_id IS NOT NULL;
CREATE INDEX events_by_time ON events (mode, occurred_at);

-- Responses kept for Idempotency-Key replays (24 hours).
CREATE TABLE idempotency_keys (
    mode          TEXT NOT NULL,
    key           TEXT NOT NULL,
    route         TEXT NOT NULL,
    request_hash  BLOB NOT NULL,
    status        INTEGER NOT NULL,
    body          BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (mode, key)
) STRICT;
CREATE INDEX idempotency_by_age ON idempotency_keys (created_at);

-- Addresses that must not receive mail. `email_lower` makes matching ignore case.
CREATE TABLE suppressions (
    mode        TEXT NOT NULL,
    email_lower TEXT NOT NULL,
    email       TEXT NOT NULL,
    reason      TEXT NOT NULL CHECK (reason IN ('bounce', 'complaint', 'unsubscribe', 'manual')),
    email_id    TEXT,
    note        TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (mode, email_lower)
) STRICT;

-- Webhooks: endpoints, their subscriptions, the delivery outbox and recent attempts.
-- `secret` is kept in clear: every delivery is signed with it (shown once, at creation).
-- `failing_since` is the time of the first failed attempt since the last success; an
-- endpoint still failing 5 days later is disabled.
CREATE TABLE webhooks (
    id            TEXT PRIMARY KEY,
    mode          TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    url           TEXT NOT NULL,
    events_json   TEXT NOT NULL,
    secret        TEXT NOT NULL,
    description   TEXT,
    status        TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    failing_since INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX webhooks_by_mode ON webhooks (mode, id DESC);

-- What each ENABLED endpoint listens to: one row per event type (or '*'). Rows exist only
-- while the endpoint is enabled, so matching an event is one primary-key range lookup.
CREATE TABLE webhook_subscriptions (
    mode       TEXT NOT NULL,
    event_type TEXT NOT NULL,
    webhook_id TEXT NOT NULL,
    PRIMARY KEY (mode, event_type, webhook_id)
) STRICT, WITHOUT ROWID;

-- The outbox: one row per (event, endpoint) still to deliver. Written in the transaction
-- that records the event. A row is due when `next_attempt_ms` has passed; claiming it moves
-- `next_attempt_ms` to the end of its lease and sets `leased`, so a crash hands it back
-- (and at start every lease is released: one `serve` owns the database).
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    leased          INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_ms);

-- Recent delivery attempts, so a user can see why an endpoint fails (kept 7 days).
CREATE TABLE webhook_attempts (
    id          TEXT PRIMARY KEY,
    webhook_id  TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    duration_ms INTEGER NOT NULL,
    next_attempt_ms INTEGER,
    at          INTEGER NOT NULL
) STRICT;
CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (webhook_id, id DESC);
