//! The control plane: a Leap0-compatible REST API that turns HTTP into calls on the runtime and the firewall.

#![forbid(unsafe_code)]
