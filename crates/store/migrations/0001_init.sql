-- Palisade control-plane schema. Kept to types and constructs that also exist in Postgres
-- (TEXT, BIGINT, BLOB ~ BYTEA, partial unique indexes), so the store can move there later.
-- Times are Unix milliseconds (BIGINT). Sealed columns hold AEAD ciphertexts (see seal.rs);
-- their associated data binds each one to its row, so a copied ciphertext does not open.

CREATE TABLE orgs (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    max_sandboxes BIGINT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    -- sha256 of the whole key, hex; the key itself is shown once and never stored.
    key_hash     TEXT NOT NULL UNIQUE,
    -- the first characters of the key, to tell keys apart in listings.
    key_prefix   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_org ON api_keys(org_id);

CREATE TABLE templates (
    id           TEXT PRIMARY KEY,
    -- NULL for system templates, visible to every organisation.
    org_id       TEXT REFERENCES orgs(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    source_kind  TEXT NOT NULL,
    source_uri   TEXT NOT NULL,
    digest       TEXT NOT NULL DEFAULT '',
    image_config TEXT,
    state        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX templates_org_name ON templates(org_id, name) WHERE org_id IS NOT NULL;
CREATE UNIQUE INDEX templates_system_name ON templates(name) WHERE org_id IS NULL;

CREATE TABLE sandboxes (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    template_id      TEXT NOT NULL,
    vcpu             BIGINT NOT NULL,
    memory_mib       BIGINT NOT NULL,
    disk_mib         BIGINT NOT NULL,
    state            TEXT NOT NULL,
    auto_pause       BOOLEAN NOT NULL,
    timeout_secs     BIGINT NOT NULL,
    -- when the timeout fires (deleted, or snapshotted and stopped with auto_pause).
    deadline_at      BIGINT,
    env_sealed       BLOB,
    address          TEXT,
    -- the policy version the data plane enforces; 0 before the first is applied.
    policy_version   BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    state_changed_at BIGINT NOT NULL
);
CREATE INDEX sandboxes_org_created ON sandboxes(org_id, created_at);
CREATE INDEX sandboxes_state ON sandboxes(state);
CREATE INDEX sandboxes_deadline ON sandboxes(deadline_at);

CREATE TABLE sandbox_policies (
    sandbox_id  TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    -- the full policy (inject_headers values included), sealed with AD "policy:<sandbox>:<version>".
    sealed      BLOB NOT NULL,
    -- the same policy with every injected value redacted, for listings.
    redacted    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    applied_at  BIGINT,
    PRIMARY KEY (sandbox_id, version)
);

CREATE TABLE sandbox_cas (
    sandbox_id  TEXT PRIMARY KEY REFERENCES sandboxes(id) ON DELETE CASCADE,
    cert_pem    TEXT NOT NULL,
    -- sealed with AD "ca:<sandbox>".
    key_sealed  BLOB NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE snapshots (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES orgs(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    -- the sandbox it was taken from; that sandbox may be gone since.
    sandbox_id      TEXT,
    template_id     TEXT NOT NULL,
    vcpu            BIGINT NOT NULL,
    memory_mib      BIGINT NOT NULL,
    disk_mib        BIGINT NOT NULL,
    state           TEXT NOT NULL,
    archive_path    TEXT NOT NULL,
    archive_bytes   BIGINT NOT NULL,
    -- sealed with AD "snapshot-policy:<id>" and "snapshot-env:<id>".
    policy_sealed   BLOB,
    policy_redacted TEXT,
    env_sealed      BLOB,
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX snapshots_org_name ON snapshots(org_id, name);
CREATE INDEX snapshots_org_created ON snapshots(org_id, created_at);

CREATE TABLE egress_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    sandbox_id  TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    verdict     TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    dst_addr    TEXT,
    dst_port    BIGINT,
    name        TEXT,
    rule        TEXT,
    reason      TEXT,
    bytes_up    BIGINT NOT NULL DEFAULT 0,
    bytes_down  BIGINT NOT NULL DEFAULT 0,
    duration_ms BIGINT NOT NULL DEFAULT 0,
    -- anything else (HTTP method, host, path, status...), JSON; never secrets.
    detail      TEXT
);
CREATE INDEX egress_events_sandbox ON egress_events(sandbox_id, id);
CREATE INDEX egress_events_at ON egress_events(at_ms);
