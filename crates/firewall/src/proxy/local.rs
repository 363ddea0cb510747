//! The firewall host's own addresses, refreshed in the background, so that no sandbox can
//! reach a service on the host through the proxy (threat 12).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct LocalAddrs {
    addrs: RwLock<HashSet<IpAddr>>,
}

impl LocalAddrs {
    /// Reads the addresses now and keeps them fresh every `every` while the returned task runs.
    pub fn start(every: Duration) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let this = Arc::new(Self::default());
        this.refresh();
        let weak = Arc::downgrade(&this);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(this) => this.refresh(),
                    None => return,
                }
            }
        });
        (this, task)
    }

    pub fn refresh(&self) {
        let Ok(list) = nix::ifaddrs::getifaddrs() else {
            tracing::warn!("cannot read the host's interface addresses; keeping the last list");
            return;
        };
        let fresh: HashSet<IpAddr> = list
            .filter_map(|ifa| ifa.address)
            .filter_map(|a| {
                a.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })
            .collect();
        *self.addrs.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_unspecified()
            || self
                .addrs
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&ip)
    }
}
