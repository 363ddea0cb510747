//! The data plane: the transparent proxy that every TCP connection from a sandbox is redirected
//! to, the filtering DNS resolver, and the egress events that record every decision.

#![forbid(unsafe_code)]

pub mod dns;
pub mod events;
pub mod resolve;
