//! The filtering DNS resolver: a view per sandbox.
