//! The synapse table: which request names the server serves, and how.
//!
//! The core owns it; the application (the driver) keeps its handlers in a table of its
//! own indexed by [`SynapseIndex`], so a request reaches its handler by index, never by a
//! second lookup of its name. An index stays valid for as long as the server lives: a
//! name registered again gets its old index back, and unregistering only empties its slot.

use std::collections::HashMap;

use super::SynapseKind;

/// Where a synapse sits in the server's synapse table (and in the application's table of
/// handlers, which mirrors it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SynapseIndex(pub u32);

impl SynapseIndex {
    /// As a position in a `Vec`.
    pub fn slot(self) -> usize {
        self.0 as usize
    }
}

/// Names to kinds, with stable indexes.
#[derive(Debug, Default)]
pub(super) struct SynapseTable {
    by_name: HashMap<String, SynapseIndex>,
    /// Indexed by `SynapseIndex`; `None` once unregistered.
    kinds: Vec<Option<SynapseKind>>,
}

impl SynapseTable {
    /// Registers (or re-registers) `name`; returns its index.
    pub(super) fn register(&mut self, name: String, kind: SynapseKind) -> SynapseIndex {
        if let Some(&index) = self.by_name.get(&name) {
            self.kinds[index.slot()] = Some(kind);
            return index;
        }
        let index = SynapseIndex(u32::try_from(self.kinds.len()).unwrap_or(u32::MAX));
        self.kinds.push(Some(kind));
        self.by_name.insert(name, index);
        index
    }

    /// Stops serving `name`; returns the index it had, if it was served.
    pub(super) fn unregister(&mut self, name: &str) -> Option<SynapseIndex> {
        let index = *self.by_name.get(name)?;
        self.kinds[index.slot()].take().map(|_| index)
    }

    /// The served synapse called `name`.
    pub(super) fn lookup(&self, name: &str) -> Option<(SynapseIndex, SynapseKind)> {
        let index = *self.by_name.get(name)?;
        let kind = (*self.kinds.get(index.slot())?)?;
        Some((index, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_stable_across_unregister_and_register() {
        let mut t = SynapseTable::default();
        let echo = t.register("echo".into(), SynapseKind::Unary);
        let stream = t.register("stream".into(), SynapseKind::Streaming);
        assert_ne!(echo, stream);
        assert_eq!(t.lookup("echo"), Some((echo, SynapseKind::Unary)));
        assert_eq!(t.unregister("echo"), Some(echo));
        assert_eq!(t.lookup("echo"), None);
        assert_eq!(t.unregister("echo"), None);
        // Back under the same index, with its new kind; the other one never moved.
        assert_eq!(t.register("echo".into(), SynapseKind::Streaming), echo);
        assert_eq!(t.lookup("echo"), Some((echo, SynapseKind::Streaming)));
        assert_eq!(t.lookup("stream"), Some((stream, SynapseKind::Streaming)));
        assert_eq!(t.lookup("other"), None);
    }
}
