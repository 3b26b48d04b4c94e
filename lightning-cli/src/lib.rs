//! What the `lightning` binary serves, as a library: the workspace's adversarial suite
//! attacks these very handlers (`tests/tests/adversarial.rs`).

pub mod synapses;
