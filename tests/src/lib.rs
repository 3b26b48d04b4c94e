//! Shared helpers for the workspace-level integration tests.
#![deny(missing_docs)]
