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

-- Audiences, contacts, marketing sends and tracking (#5).
-- An audience is a named list of contacts. `email_lower` makes the upsert by email ignore case.
CREATE TABLE audiences (
    id         TEXT PRIMARY KEY,
    mode       TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    name       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX audiences_by_mode ON audiences (mode, id DESC);

CREATE TABLE contacts (
    id           TEXT PRIMARY KEY,
    audience_id  TEXT NOT NULL REFERENCES audiences (id) ON DELETE CASCADE,
    mode         TEXT NOT NULL,
    email        TEXT NOT NULL,
    email_lower  TEXT NOT NULL,
    first_name   TEXT,
    last_name    TEXT,
    data_json    TEXT NOT NULL DEFAULT '{}',
    unsubscribed INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX contacts_by_email ON contacts (audience_id, email_lower);
CREATE INDEX contacts_by_audience ON contacts (audience_id, id);
CREATE INDEX contacts_by_mode_email ON contacts (mode, email_lower);

-- An audience send whose per-contact copies a background worker is still creating: it walks
-- the audience's contacts in id order up to `last_contact_id` (the newest at accept time),
-- `cursor` being the last one done, in the same transaction as the copies it made.
CREATE TABLE audience_sends (
    email_id        TEXT PRIMARY KEY REFERENCES emails (id) ON DELETE CASCADE,
    mode            TEXT NOT NULL,
    audience_id     TEXT NOT NULL,
    request_json    TEXT NOT NULL,
    last_contact_id TEXT NOT NULL,
    cursor          TEXT NOT NULL DEFAULT '',
    created         INTEGER NOT NULL DEFAULT 0,
    done_at         INTEGER
) STRICT;
CREATE INDEX audience_sends_pending ON audience_sends (email_id) WHERE done_at IS NULL;

-- Recipient counts per status of an email without reading the rows (audience sends have
-- one row, with its own message copy, per contact).
CREATE INDEX recipients_by_email_status ON recipients (email_id, status);

-- Opens and clicks per recipient: the first of each is an event, every one is counted here.
CREATE TABLE engagement (
    email_id        TEXT NOT NULL,
    recipient_lower TEXT NOT NULL,
    opens           INTEGER NOT NULL DEFAULT 0,
    clicks          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (email_id, recipient_lower)
) STRICT, WITHOUT ROWID;
