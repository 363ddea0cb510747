//! The data plane: transparent proxy, filtering DNS resolver and egress events.

#![forbid(unsafe_code)]
