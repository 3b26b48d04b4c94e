//! Lightning on tokio: async client and server over the sans-IO core.
//!
//! Placeholder until the runtime adapter lands; see the repository issues.
#![deny(missing_docs)]

pub use lightning_proto as proto;
