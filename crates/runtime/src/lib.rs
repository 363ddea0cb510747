//! Sandboxes as runc containers: OCI spec, overlay root filesystem, templates, exec, pause and snapshot archives.

#![forbid(unsafe_code)]
