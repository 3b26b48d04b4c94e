//! Named path profiles.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{LinkConfig, RelayConfig};

/// A named path, the same both ways.
///
/// | profile | RTT | jitter (one way) | loss (each way) | rate (each way) | queue | MTU |
/// |---|---:|---:|---:|---:|---:|---:|
/// | `lan` | + 0 | 0 | 0 | unlimited | — | none |
/// | `continent` | 40 ms | ± 0.5 ms | 0.1 % | 1 Gbit/s | 5 MB | 1500 |
/// | `world` | 160 ms | ± 2 ms | 1 % | 100 Mbit/s | 2 MB | 1500 |
///
/// Queues hold about one round trip at the link rate. `lan` adds nothing, not even the
/// timer: sub-millisecond sleeps are below tokio's timer resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// No added delay, loss, rate limit or MTU: the relay's own cost only.
    Lan,
    /// 40 ms RTT, 0.1 % loss, 1 Gbit/s, MTU 1500.
    Continent,
    /// 160 ms RTT, 1 % loss, 100 Mbit/s, MTU 1500.
    World,
}

impl Profile {
    /// Every profile, mildest first.
    pub const ALL: [Profile; 3] = [Profile::Lan, Profile::Continent, Profile::World];

    /// The profile's name (`lan`, `continent`, `world`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Lan => "lan",
            Self::Continent => "continent",
            Self::World => "world",
        }
    }

    /// The round-trip time the profile adds.
    pub fn rtt(self) -> Duration {
        self.link().delay * 2
    }

    /// The impairments of each direction.
    pub fn link(self) -> LinkConfig {
        match self {
            Self::Lan => LinkConfig::default(),
            Self::Continent => LinkConfig {
                delay: Duration::from_millis(20),
                jitter: Duration::from_micros(500),
                reorder: false,
                loss: 0.001,
                rate_bits_per_s: Some(1_000_000_000),
                queue_bytes: 5_000_000,
                mtu: Some(1500),
            },
            Self::World => LinkConfig {
                delay: Duration::from_millis(80),
                jitter: Duration::from_millis(2),
                reorder: false,
                loss: 0.01,
                rate_bits_per_s: Some(100_000_000),
                queue_bytes: 2_000_000,
                mtu: Some(1500),
            },
        }
    }

    /// A relay configuration with this profile both ways and `seed` for its decisions.
    pub fn config(self, seed: u64) -> RelayConfig {
        RelayConfig::symmetric(self.link(), seed)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile name that is not one of [`Profile::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseProfileError(pub String);

impl fmt::Display for ParseProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown profile {:?} (expected lan, continent or world)",
            self.0
        )
    }
}

impl std::error::Error for ParseProfileError {}

impl FromStr for Profile {
    type Err = ParseProfileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseProfileError(s.to_string()))
    }
}
