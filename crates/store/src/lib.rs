//! Durable state in SQLite through sqlx: migrations, sandboxes, snapshots, policies and sealed secrets.

#![forbid(unsafe_code)]
