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

-- One row per accepted email. Migration 2 moves its html, text and raw (the MIME message as
-- it will be sent) to `email_contents`.
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

-- Dashboard: administrators (argon2 password hashes), their sessions (only the SHA-256 of
-- the session id is kept) and failed sign-ins (for the lock-out).
CREATE TABLE admins (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE admin_sessions (
    id_hash     BLOB PRIMARY KEY,
    admin_id    TEXT NOT NULL REFERENCES admins (id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE login_failures (
    email        TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    first_at     INTEGER NOT NULL,
    locked_until INTEGER
) STRICT;
-- Sending domains (issue #7). One row per domain and mode. The DKIM private key (PKCS#1
-- DER) never leaves the server; `dkim_public_key` is the base64 SubjectPublicKeyInfo of the
-- DKIM record's `p=`. The selector is kept per domain so a later change of
-- `domains.dkim_selector` does not break domains already published. `checks_json` holds the
-- result of the last DNS check per record; `failing_since` is when a verified domain first
-- lost a record (temporary_failure turns into failed after the grace period).
CREATE TABLE domains (
    id               TEXT PRIMARY KEY,
    mode             TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    name             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'verified', 'partially_verified',
                                                     'failed', 'temporary_failure')),
    dkim_selector    TEXT NOT NULL,
    dkim_private_key BLOB NOT NULL,
    dkim_public_key  TEXT NOT NULL,
    checks_json      TEXT NOT NULL DEFAULT '{}',
    created_at       INTEGER NOT NULL,
    verified_at      INTEGER,
    last_checked_at  INTEGER,
    failing_since    INTEGER,
    UNIQUE (mode, name)
) STRICT;
CREATE INDEX domains_by_check ON domains (status, last_checked_at);
-- Emails by the domain of their From address, for a domain's reputation. The expression
-- must be written exactly like this in queries for SQLite to use the index.
CREATE INDEX emails_by_from_domain
    ON emails (mode, substr(from_address, instr(from_address, '@') + 1), created_at);
-- Templates (issue #4): user templates, rendered with minijinja (src/templates). `name` is
-- unique per mode ignoring ASCII case. `layout_id` is the template that wraps this one where
-- it says `{{ content }}`; layouts are one level deep (a layout has no layout itself), so
-- there are no cycles. `variables_json` holds, per part, the variables the template itself
-- reads (`{"subject": [...], "html": [...], "text": [...]}`), found when it was saved; a part
-- that reads `content` can wrap that part of another template.
CREATE TABLE templates (
    id                TEXT PRIMARY KEY,
    mode              TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    name              TEXT NOT NULL COLLATE NOCASE,
    subject           TEXT,
    html              TEXT,
    text              TEXT,
    layout_id         TEXT REFERENCES templates (id),
    variables_json    TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    UNIQUE (mode, name)
) STRICT;
CREATE INDEX templates_by_mode ON templates (mode, id DESC);
CREATE INDEX templates_by_layout ON templates (layout_id) WHERE layout_id IS NOT NULL;

-- Physical mail (postal). One row per letter, postcard or parcel. `status` is the
-- vendor-neutral status of API.md; `vendor_status` is the vendor's own word beside it.
-- The row is also the postal worker's queue: `next_action_at` (Unix milliseconds) says when
-- the worker next submits, advances or polls the piece (NULL: nothing left to do), and
-- `lease_until` marks a piece a worker is handling now (cleared at start: one serve per file).
CREATE TABLE mail_pieces (
    id                     TEXT PRIMARY KEY,
    mode                   TEXT NOT NULL CHECK (mode IN ('live', 'test')),
    type                   TEXT NOT NULL CHECK (type IN ('letter', 'postcard', 'parcel')),
    status                 TEXT NOT NULL,
    vendor                 TEXT NOT NULL,
    vendor_id              TEXT,
    vendor_status          TEXT,
    vendor_data_json       TEXT NOT NULL DEFAULT '{}',
    carrier                TEXT,
    tracking_number        TEXT,
    expected_delivery_date TEXT,
    description            TEXT,
    to_json                TEXT NOT NULL,
    from_json              TEXT NOT NULL,
    options_json           TEXT NOT NULL,
    metadata_json          TEXT NOT NULL,
    html                   TEXT,
    front_html             TEXT,
    back_html              TEXT,
    pdf                    BLOB,
    send_date              INTEGER,
    api_key_id             TEXT,
    attempts               INTEGER NOT NULL DEFAULT 0,
    last_error             TEXT,
    next_action_at         INTEGER,
    lease_until            INTEGER,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
) STRICT;
CREATE INDEX mail_by_mode ON mail_pieces (mode, id DESC);
CREATE INDEX mail_by_status ON mail_pieces (mode, status, id DESC);
CREATE INDEX mail_due ON mail_pieces (next_action_at) WHERE next_action_at IS NOT NULL;
CREATE UNIQUE INDEX mail_by_vendor_id ON mail_pieces (vendor, vendor_id) WHERE vendor_id IS NOT NULL;

-- The tracking history of a piece, oldest first: one row per status change and per further
-- scan the vendor reports. `vendor_event_id` makes a webhook or poll seen twice count once.
CREATE TABLE mail_tracking (
    id              INTEGER PRIMARY KEY,
    mail_id         TEXT NOT NULL REFERENCES mail_pieces (id) ON DELETE CASCADE,
    status          TEXT NOT NULL,
    vendor_status   TEXT,
    description     TEXT NOT NULL,
    location        TEXT,
    occurred_at     INTEGER NOT NULL,
    vendor_event_id TEXT
) STRICT;
CREATE INDEX mail_tracking_by_mail ON mail_tracking (mail_id, id);
CREATE UNIQUE INDEX mail_tracking_vendor_event ON mail_tracking (mail_id, vendor_event_id)
    WHERE vendor_event_id IS NOT NULL;

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

-- migration: 2
-- Message bodies apart from the rows that carry statuses. SQLite rewrites a whole row on
-- every UPDATE, overflow pages included, and `emails` and `recipients` rows change status
-- several times on their way (queued, sending, sent or delivered): with the bodies and the
-- MIME message inline, each change copied kilobytes.
--
-- The MIME message (`raw`, signed when a DKIM key applies), html and text of each email.
-- `raw` comes first: the delivery worker reads only it, and SQLite reads a row's columns
-- in order, through overflow pages.
CREATE TABLE email_contents (
    email_id TEXT PRIMARY KEY REFERENCES emails (id) ON DELETE CASCADE,
    raw      BLOB,
    html     TEXT,
    text     TEXT
) STRICT;
INSERT INTO email_contents (email_id, raw, html, text) SELECT id, raw, html, text FROM emails;
ALTER TABLE emails DROP COLUMN html;
ALTER TABLE emails DROP COLUMN text;
ALTER TABLE emails DROP COLUMN raw;

-- A recipient's own copy of the message (marketing, tracked and audience sends carry the
-- recipient's unsubscribe and tracking links); the others get their email's `raw`.
CREATE TABLE recipient_copies (
    recipient_id INTEGER PRIMARY KEY REFERENCES recipients (id) ON DELETE CASCADE,
    raw          BLOB NOT NULL
) STRICT;
INSERT INTO recipient_copies (recipient_id, raw) SELECT id, raw FROM recipients WHERE raw IS NOT NULL;
ALTER TABLE recipients DROP COLUMN raw;

-- migration: 3
-- The `to` filter's index, apart from the recipient rows. An index keyed by address gets
-- one random page per new recipient, and SQLite logs whole pages on every commit: written
-- with each accepted email, that page was the largest single cost of accepting mail. The
-- emails capability's indexer (src/emails/indexer.rs) copies new recipients here in
-- address order, thousands per transaction, so a page is written once for many of them.
-- `settings.recipients_indexed_to` is the last recipient id copied; the filter also reads
-- the recipients after it, so it always sees every email. Whatever deletes recipients
-- must delete their rows here too.
CREATE TABLE recipient_addresses (
    mode          TEXT NOT NULL,
    address_lower TEXT NOT NULL,
    email_id      TEXT NOT NULL,
    PRIMARY KEY (mode, address_lower, email_id)
) STRICT, WITHOUT ROWID;
INSERT OR IGNORE INTO recipient_addresses (mode, address_lower, email_id)
    SELECT mode, address_lower, email_id FROM recipients ORDER BY 1, 2, 3;
INSERT OR REPLACE INTO settings (key, value)
    SELECT 'recipients_indexed_to', CAST(coalesce(max(id), 0) AS TEXT) FROM recipients;
DROP INDEX recipients_by_address;

-- migration: 4
-- Recipient rows without temporary B-trees. A condition written `x IN (three or more
-- values)` makes SQLite build a temporary B-tree for the list each time it is tested: the
-- CHECK on `kind` on every recipient INSERT, the due index's condition on every INSERT and
-- every status UPDATE (three per accepted email, a tenth of the writer's time). Written as
-- equalities they cost nothing. A CHECK can only change with its table, so the table is
-- rebuilt (SQLite's documented way: new table, copy, drop, rename; src/store/mod.rs turns
-- foreign keys off around migrations and checks them afterwards). Queries that use the
-- due index must write its condition exactly like this (src/delivery/queue.rs).
CREATE TABLE recipients_rebuilt (
    id              INTEGER PRIMARY KEY,
    email_id        TEXT NOT NULL REFERENCES emails (id) ON DELETE CASCADE,
    mode            TEXT NOT NULL,
    address         TEXT NOT NULL,
    address_lower   TEXT NOT NULL,
    domain          TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind = 'to' OR kind = 'cc' OR kind = 'bcc'),
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_response   TEXT,
    next_attempt_at INTEGER,
    lease_until     INTEGER,
    updated_at      INTEGER NOT NULL,
    contact_id      TEXT
) STRICT;
INSERT INTO recipients_rebuilt (id, email_id, mode, address, address_lower, domain, kind,
        status, attempts, last_response, next_attempt_at, lease_until, updated_at, contact_id)
    SELECT id, email_id, mode, address, address_lower, domain, kind,
        status, attempts, last_response, next_attempt_at, lease_until, updated_at, contact_id
    FROM recipients;
DROP TABLE recipients;
ALTER TABLE recipients_rebuilt RENAME TO recipients;
CREATE INDEX recipients_by_email ON recipients (email_id, id);
CREATE INDEX recipients_by_email_status ON recipients (email_id, status);
CREATE INDEX recipients_due ON recipients (next_attempt_at)
    WHERE status = 'queued' OR status = 'deferred' OR status = 'scheduled';
CREATE INDEX recipients_leased ON recipients (lease_until) WHERE status = 'sending';

-- migration: 5
-- Listing indexes in ascending id order. They were declared `id DESC` to match the lists'
-- `ORDER BY id DESC`, but SQLite reads an index backwards just as fast, and a new id (the
-- largest) then lands at the front of its range: every page split left two half-full
-- pages, so these indexes held twice the pages they needed and each accepted email wrote
-- more of them (the three on `emails` were a quarter of its pages after the ingest
-- benchmark). In ascending order a new id is appended at the end of its range.
DROP INDEX emails_by_mode;
DROP INDEX emails_by_status;
DROP INDEX emails_by_from;
CREATE INDEX emails_by_mode ON emails (mode, id);
CREATE INDEX emails_by_status ON emails (mode, status, id);
CREATE INDEX emails_by_from ON emails (mode, from_address, id);
DROP INDEX templates_by_mode;
CREATE INDEX templates_by_mode ON templates (mode, id);
DROP INDEX mail_by_mode;
DROP INDEX mail_by_status;
CREATE INDEX mail_by_mode ON mail_pieces (mode, id);
CREATE INDEX mail_by_status ON mail_pieces (mode, status, id);
DROP INDEX webhooks_by_mode;
CREATE INDEX webhooks_by_mode ON webhooks (mode, id);
DROP INDEX webhook_attempts_by_webhook;
CREATE INDEX webhook_attempts_by_webhook ON webhook_attempts (webhook_id, id);
DROP INDEX audiences_by_mode;
CREATE INDEX audiences_by_mode ON audiences (mode, id);

-- migration: 6
-- Events keyed by their id alone. With `id TEXT PRIMARY KEY` on an ordinary table SQLite
-- keeps two B-trees, the rows by a hidden rowid and an index from id to rowid, and every
-- event (at least one per accepted email) was written to both. A WITHOUT ROWID table is
-- the one B-tree, ordered by id (a ULID, so new events append at its end), and a lookup
-- by id reads one B-tree instead of two. Event rows are small, which is what such tables
-- are made for. Rebuilt the documented way; nothing refers to the rowid of an event.
CREATE TABLE events_rebuilt (
    id          TEXT PRIMARY KEY,
    mode        TEXT NOT NULL,
    type        TEXT NOT NULL,
    email_id    TEXT,
    mail_id     TEXT,
    recipient   TEXT,
    detail      TEXT,
    data_json   TEXT,
    occurred_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
INSERT INTO events_rebuilt (id, mode, type, email_id, mail_id, recipient, detail, data_json,
        occurred_at)
    SELECT id, mode, type, email_id, mail_id, recipient, detail, data_json, occurred_at
    FROM events;
DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;
CREATE INDEX events_by_email ON events (email_id, id) WHERE email_id IS NOT NULL;
CREATE INDEX events_by_mail ON events (mail_id, id) WHERE mail_id IS NOT NULL;
CREATE INDEX events_by_time ON events (mode, occurred_at);

-- migration: 7
-- No index of events by time. Event ids are ULIDs made as the event is recorded, so the
-- events' own B-tree is already in time order: the dashboard's "since" queries read a
-- range of ids from the first one that can have happened since then (src/dashboard/store.rs).
-- The index was one more B-tree written with every event, at least one per accepted email.
DROP INDEX events_by_time;

-- migration: 8
-- Multi-row INSERTs without a statement journal. SQLite copies every page a statement
-- changes into a statement journal when the statement writes several rows and "may
-- abort", so that a failure halfway can undo it alone. The writer's multi-row INSERTs
-- (src/store/rows.rs) were such statements for three reasons, each removed here or there:
-- 1. The index by From domain was on an expression, and any function in the code SQLite
--    generates counts as "may abort". The domain is now a column of its own, written by
--    the server (src/emails/store.rs), and the index is on it.
-- 2. The foreign keys of `recipients` and `email_contents` were immediate, checked by
--    every row. They are now DEFERRABLE INITIALLY DEFERRED: checked at COMMIT, and after
--    each write job by the writer (src/store/writer.rs), so one job's violation fails
--    that job alone. ON DELETE CASCADE still acts at once. The clause is changed in the
--    stored CREATE TABLE text, SQLite's documented way for constraint changes that leave
--    the rows as they are: no copy of the two largest tables.
-- 3. The default conflict action ABORT; `rows` writes `INSERT OR FAIL`, which keeps the
--    rows a failing statement already wrote, and the job fails and is rolled back whole.
-- The schema edit comes first and `writable_schema = RESET` reloads this connection's
-- schema; the ALTER TABLE after it changes the schema cookie, which makes every other
-- connection reload it too.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
    SET sql = replace(sql, 'REFERENCES emails (id) ON DELETE CASCADE',
                      'REFERENCES emails (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED')
    WHERE type = 'table' AND name IN ('recipients', 'email_contents');
PRAGMA writable_schema = RESET;
ALTER TABLE emails ADD COLUMN from_domain TEXT NOT NULL DEFAULT '';
-- The domain is what follows the last '@' (a quoted local part may hold one): rtrim with
-- every character but '@' cuts the address back to its last '@'.
UPDATE emails SET from_domain =
    substr(from_address, length(rtrim(from_address, replace(from_address, '@', ''))) + 1);
DROP INDEX emails_by_from_domain;
CREATE INDEX emails_by_from_domain ON emails (mode, from_domain, created_at);

-- migration: 9
-- The index of recipients by email and status only for audience sends. It lets an email's
-- recipients be counted by status without reading them, which only an audience send needs
-- (one row per contact, thousands; every other email has at most fifty, and its rows are
-- read anyway). Every other recipient was one more B-tree entry written when accepted and
-- moved on each status change (queued, sending, delivered). Audience sends' recipients are
-- exactly those with a contact (an audience send has no to/cc/bcc), so the condition is
-- `contact_id IS NOT NULL`, and `emails::store::status_counts` counts an audience send with
-- it written out. SQLite still tests that condition on each row it counts, so the index
-- holds `contact_id` too: the count reads the index alone.
DROP INDEX recipients_by_email_status;
CREATE INDEX recipients_by_email_status ON recipients (email_id, status, contact_id)
    WHERE contact_id IS NOT NULL;

-- migration: 10
-- The `to` filter's index as sorted runs (src/emails/address_index.rs). Migration 3 made
-- the indexer copy recipients in address order, thousands at a time, but once the index
-- outgrew a pass each distinct new address still landed on a page of its own: in batches
-- to random addresses, 5.4 KB of WAL per email after 40 s instead of 3.4 KB, and rising
-- with the table. Each pass now writes its recipients as a run of their own, behind all
-- others (the run leads the key), and the indexer merges runs of like size a chunk at a
-- time, so every entry is written a few times in order instead of costing a random page.
-- A source run's `merging_into` is the run its entries move to; the target's `merged_*`
-- columns are the last key moved, so the merge resumes there after a restart. What was
-- indexed becomes run 1.
CREATE TABLE recipient_address_runs (
    id             INTEGER PRIMARY KEY,
    entries        INTEGER NOT NULL,
    merging_into   INTEGER,
    merged_mode    TEXT,
    merged_address TEXT,
    merged_email   TEXT
) STRICT;
CREATE TABLE recipient_addresses_in_runs (
    run           INTEGER NOT NULL,
    mode          TEXT NOT NULL,
    address_lower TEXT NOT NULL,
    email_id      TEXT NOT NULL,
    PRIMARY KEY (run, mode, address_lower, email_id)
) STRICT, WITHOUT ROWID;
INSERT INTO recipient_address_runs (id, entries)
    SELECT 1, count(*) FROM recipient_addresses HAVING count(*) > 0;
INSERT INTO recipient_addresses_in_runs (run, mode, address_lower, email_id)
    SELECT 1, mode, address_lower, email_id FROM recipient_addresses ORDER BY 2, 3, 4;
DROP TABLE recipient_addresses;
ALTER TABLE recipient_addresses_in_runs RENAME TO recipient_addresses;

-- migration: 11
-- A run the indexer is still writing. It copies a pass's recipients in short transactions
-- (src/emails/address_index.rs, `RunCopy`), so that requests get the writer in between:
-- one transaction per pass held every other write for 15-20 ms, several times a second.
-- Until its last part clears `filling`, no merge takes the run and its recipients are
-- still after `recipients_indexed_to` (the filter reads them there as well); a run a crash
-- left filling is dropped by the next copy, which copies its recipients again.
ALTER TABLE recipient_address_runs ADD COLUMN filling INTEGER NOT NULL DEFAULT 0;
