//! Upstream resolution for allowed names, with a cache.
