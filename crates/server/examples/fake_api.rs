//! Serve the API over the real control plane with recording platforms (no runc, no netns, no
//! root) on 127.0.0.1, for checking the real Leap0 SDKs against the wire format without
//! sandboxes. The store lives in a temporary directory; the API key to use is printed:
//!
//! `cargo run -p palisade-server --example fake_api -- 127.0.0.1:18080`

use std::sync::Arc;

use palisade_server::testing::TestPlane;
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
    let dir = tempfile::tempdir()?;
    let bed = TestPlane::new(dir.path()).await?;
    let key = bed.add_org("org-test", None).await?;
    let app = api_router(bed.plane.clone(), Arc::new(Metrics::default()));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    // The one line a person (or sdk_check.py's caller) needs.
    #[expect(clippy::print_stdout, reason = "an example's output")]
    {
        println!("fake API on http://{addr}, key {key}");
    }
    axum::serve(listener, app).await?;
    Ok(())
}
