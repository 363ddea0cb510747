//! Serve the API over the in-memory fake control plane on 127.0.0.1, for checking the real
//! Leap0 SDKs against the wire format without sandboxes:
//!
//! `cargo run -p palisade-server --example fake_api -- 127.0.0.1:18080 pl_testkey`

use std::sync::Arc;

use palisade_server::fake::FakeControlPlane;
use palisade_server::{Metrics, api_router};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18080".into())
        .parse()?;
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "the fake API binds to loopback only"
    );
    let key = args.next().unwrap_or_else(|| "pl_testkey".into());
    let fake = Arc::new(FakeControlPlane::new());
    fake.add_key(&key, "org-test");
    let app = api_router(fake, Arc::new(Metrics::default()));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
