//! Egress events: written in batches by a background task, so the data plane never waits on
//! the disk, and trimmed to a retention limit (newest N per sandbox, and a maximum age).

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::{QueryBuilder, Sqlite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{Result, Store, now_ms};

/// One egress decision as stored. Built by the firewall's event type; never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EgressEventRecord {
    /// Assigned by the store; ignored on insert.
    pub id: i64,
    pub sandbox_id: String,
    #[sqlx(flatten)]
    pub event: EgressEventFields,
    /// Further detail (HTTP method, host, path, status...) as JSON.
    pub detail: Option<String>,
}

/// What an egress event says besides whose it is and its free-form detail: as stored, and as
/// the API answers it (which adds a readable time and the detail parsed).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EgressEventFields {
    pub at_ms: i64,
    /// `allow`, `deny`, `would-deny` (audit mode) or `hold` (waiting for approval).
    #[cfg_attr(feature = "openapi", schema(example = "deny"))]
    pub verdict: String,
    /// `tls`, `http`, `dns`, `tcp`, `udp`...
    #[cfg_attr(feature = "openapi", schema(example = "tls"))]
    pub protocol: String,
    #[cfg_attr(feature = "openapi", schema(example = "203.0.113.7"))]
    pub dst_addr: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 65535, example = 443)
    )]
    pub dst_port: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(example = "api.example.com"))]
    pub name: Option<String>,
    #[cfg_attr(feature = "openapi", schema(example = "default"))]
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub duration_ms: i64,
}

/// How long events are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_per_sandbox: i64,
    pub max_age_ms: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_per_sandbox: 10_000,
            max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Filters for reading events back; newest first unless `after_id` is given (a tail).
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events newer than this id, oldest first (to follow a stream).
    pub after_id: Option<i64>,
    /// Only events older than this id (to page backwards).
    pub before_id: Option<i64>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub verdict: Option<String>,
    pub name: Option<String>,
    /// 1..=1000, default 100.
    pub limit: Option<u32>,
}

impl Store {
    /// Insert a batch in one transaction.
    pub async fn insert_events(&self, events: &[EgressEventRecord]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        // SQLite allows 32766 bound parameters; 13 per row, so chunk well below that.
        for chunk in events.chunks(500) {
            let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO egress_events (sandbox_id, at_ms, verdict, protocol, dst_addr, \
                 dst_port, name, rule, reason, bytes_up, bytes_down, duration_ms, detail) ",
            );
            b.push_values(
                chunk,
                |mut row,
                 EgressEventRecord {
                     sandbox_id,
                     event: e,
                     detail,
                     ..
                 }| {
                    row.push_bind(sandbox_id.clone())
                        .push_bind(e.at_ms)
                        .push_bind(e.verdict.clone())
                        .push_bind(e.protocol.clone())
                        .push_bind(e.dst_addr.clone())
                        .push_bind(e.dst_port)
                        .push_bind(e.name.clone())
                        .push_bind(e.rule.clone())
                        .push_bind(e.reason.clone())
                        .push_bind(e.bytes_up)
                        .push_bind(e.bytes_down)
                        .push_bind(e.duration_ms)
                        .push_bind(detail.clone());
                },
            );
            b.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_events(
        &self,
        sandbox_id: &str,
        q: &EventQuery,
    ) -> Result<Vec<EgressEventRecord>> {
        let mut b: QueryBuilder<Sqlite> = QueryBuilder::new(
            "SELECT id, sandbox_id, at_ms, verdict, protocol, dst_addr, dst_port, name, rule, \
             reason, bytes_up, bytes_down, duration_ms, detail FROM egress_events WHERE sandbox_id = ",
        );
        b.push_bind(sandbox_id);
        if let Some(v) = q.after_id {
            b.push(" AND id > ").push_bind(v);
        }
        if let Some(v) = q.before_id {
            b.push(" AND id < ").push_bind(v);
        }
        if let Some(v) = q.since_ms {
            b.push(" AND at_ms >= ").push_bind(v);
        }
        if let Some(v) = q.until_ms {
            b.push(" AND at_ms < ").push_bind(v);
        }
        if let Some(v) = &q.verdict {
            b.push(" AND verdict = ").push_bind(v.clone());
        }
        if let Some(v) = &q.name {
            b.push(" AND name = ").push_bind(v.clone());
        }
        b.push(if q.after_id.is_some() {
            " ORDER BY id ASC"
        } else {
            " ORDER BY id DESC"
        });
        b.push(" LIMIT ")
            .push_bind(i64::from(q.limit.unwrap_or(100).clamp(1, 1000)));
        Ok(b.build_query_as().fetch_all(&self.pool).await?)
    }

    /// Trim events older than the maximum age (all sandboxes) and, for each sandbox in
    /// `sandboxes`, all but its newest `max_per_sandbox`. Returns how many went.
    pub async fn apply_retention(
        &self,
        retention: Retention,
        now: i64,
        sandboxes: &BTreeSet<String>,
    ) -> Result<u64> {
        let mut removed = sqlx::query("DELETE FROM egress_events WHERE at_ms < ?")
            .bind(now.saturating_sub(retention.max_age_ms))
            .execute(&self.pool)
            .await?
            .rows_affected();
        for sandbox in sandboxes {
            removed += sqlx::query(
                "DELETE FROM egress_events WHERE sandbox_id = ? AND id <= \
                 (SELECT id FROM egress_events WHERE sandbox_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            )
            .bind(sandbox)
            .bind(sandbox)
            .bind(retention.max_per_sandbox.max(0))
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(removed)
    }

    /// Remove every event of a sandbox (when it is deleted).
    pub async fn delete_events(&self, sandbox_id: &str) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM egress_events WHERE sandbox_id = ?")
                .bind(sandbox_id)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub struct EventWriterConfig {
    /// Events waiting to be written; beyond it new events are dropped (and counted).
    pub capacity: usize,
    /// Most events written in one transaction.
    pub batch: usize,
    /// Longest an event waits before its batch is written.
    pub flush_every: Duration,
    pub retention: Retention,
}

impl Default for EventWriterConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            batch: 1_000,
            flush_every: Duration::from_millis(500),
            retention: Retention::default(),
        }
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "events are the common case; boxing them would add an allocation per event"
)]
enum Msg {
    Event(EgressEventRecord),
    Flush(oneshot::Sender<()>),
}

/// The data plane's handle: never blocks; when the writer falls behind, events are dropped
/// and counted rather than slowing traffic down.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Msg>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Event(e) => f.debug_tuple("Event").field(&e.sandbox_id).finish(),
            Msg::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl EventSink {
    /// Queue an event; `false` when it was dropped (queue full or writer gone).
    pub fn record(&self, event: EgressEventRecord) -> bool {
        let ok = self.tx.try_send(Msg::Event(event)).is_ok();
        if !ok {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        ok
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Wait until everything queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The background writer. Ends (after writing what is queued) when every sink is dropped.
#[derive(Debug)]
pub struct EventWriter;

impl EventWriter {
    pub fn spawn(store: Store, config: EventWriterConfig) -> (EventSink, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let sink = EventSink {
            tx,
            dropped: Default::default(),
        };
        let handle = tokio::spawn(run(store, config, rx));
        (sink, handle)
    }
}

async fn run(store: Store, config: EventWriterConfig, mut rx: mpsc::Receiver<Msg>) {
    let batch_max = config.batch.max(1);
    let mut batch = Vec::with_capacity(batch_max);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut touched = BTreeSet::new();
    let mut last_retention = tokio::time::Instant::now();
    loop {
        // Wait for the first message, then gather more until the batch fills or time is up.
        let Some(first) = rx.recv().await else {
            write(&store, &mut batch, &mut touched, &config).await;
            return;
        };
        let deadline = tokio::time::Instant::now() + config.flush_every;
        let mut next = Some(first);
        let mut closed = false;
        while let Some(msg) = next.take() {
            match msg {
                Msg::Event(e) => batch.push(e),
                Msg::Flush(done) => {
                    waiting.push(done);
                    break;
                }
            }
            if batch.len() >= batch_max {
                break;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => next = Some(m),
                Ok(None) => closed = true,
                Err(_) => {}
            }
        }
        write(&store, &mut batch, &mut touched, &config).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if last_retention.elapsed() >= Duration::from_secs(30) || touched.len() > 1_000 {
            retain(&store, &mut touched, &config).await;
            last_retention = tokio::time::Instant::now();
        }
        if closed {
            retain(&store, &mut touched, &config).await;
            return;
        }
    }
}

async fn write(
    store: &Store,
    batch: &mut Vec<EgressEventRecord>,
    touched: &mut BTreeSet<String>,
    config: &EventWriterConfig,
) {
    if batch.is_empty() {
        return;
    }
    for e in batch.iter() {
        touched.insert(e.sandbox_id.clone());
    }
    if let Err(error) = store.insert_events(batch).await {
        tracing::warn!(%error, events = batch.len(), "egress events lost: batch write failed");
    }
    batch.clear();
    // Keep a burst from one sandbox from growing the table far past its limit between sweeps.
    if touched.len() > 1_000 {
        retain(store, touched, config).await;
    }
}

async fn retain(store: &Store, touched: &mut BTreeSet<String>, config: &EventWriterConfig) {
    match store
        .apply_retention(config.retention, now_ms(), touched)
        .await
    {
        Ok(n) if n > 0 => tracing::debug!(removed = n, "egress event retention"),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "egress event retention failed"),
    }
    touched.clear();
}

/// Run retention on demand for every sandbox with events (e.g. at start-up).
pub async fn retain_all(store: &Store, retention: Retention) -> Result<u64> {
    let sandboxes: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT sandbox_id FROM egress_events")
            .fetch_all(store.pool())
            .await?;
    store
        .apply_retention(retention, now_ms(), &sandboxes.into_iter().collect())
        .await
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
