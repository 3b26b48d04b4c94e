//! `lightning serve`'s report of refused handshakes.
//!
//! A refusal carries no reason on the wire (PROTOCOL §5.7), so a refused validator only
//! reads "Handshake rejected by miner". The reason is known on this side only: the miner
//! prints the refusals of each period by reason, so that its operator can tell a
//! validator missing from `--validators` from one over the rate limit or with a wrong
//! clock.

use std::collections::BTreeMap;

use lightning_tokio::proto::handshake::MAX_FUTURE_SKEW_SECS;
use lightning_tokio::ServerConfig;

/// Refusals counted so far, by reason code (`HandshakeError::reason_code`, `malformed`).
pub type Counts = BTreeMap<&'static str, u64>;

/// What a reason code means to a miner's operator, where the code alone does not say.
/// The limits quoted are those `lightning serve` runs with (the server defaults).
fn meaning(reason: &str) -> Option<String> {
    let limits = ServerConfig::default();
    Some(match reason {
        "not_permitted" => "hotkey not in --validators".into(),
        "rate_limited" => format!(
            "over {} handshakes a minute from one IP address",
            limits.max_handshake_attempts_per_minute
        ),
        "connection_limit" => "the miner's limit of validator hotkeys reached".into(),
        "too_old" => format!(
            "signed {} s ago or more: a validator clock behind, or a replay",
            limits.max_signature_age_secs
        ),
        "too_far_in_future" => {
            format!("signed more than {MAX_FUTURE_SKEW_SECS} s ahead: a validator clock ahead")
        }
        "replay" => "a nonce seen before".into(),
        "bad_signature" => "signature does not verify".into(),
        "malformed" => "a request that did not decode".into(),
        _ => return None,
    })
}

/// One line on the refusals counted between `before` and `now`, or `None` if there were
/// none. `period` names the interval in the line ("in the last 10 s").
pub fn describe(before: &Counts, now: &Counts, period: &str) -> Option<String> {
    let mut total = 0;
    let mut parts = Vec::new();
    for (&reason, &count) in now {
        let grown = count.saturating_sub(before.get(reason).copied().unwrap_or(0));
        if grown == 0 {
            continue;
        }
        total += grown;
        parts.push(match meaning(reason) {
            Some(m) => format!("{reason} {grown} ({m})"),
            None => format!("{reason} {grown}"),
        });
    }
    if total == 0 {
        return None;
    }
    let noun = if total == 1 {
        "handshake"
    } else {
        "handshakes"
    };
    Some(format!(
        "refused {total} {noun} {period}: {}",
        parts.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&'static str, u64)]) -> Counts {
        pairs.iter().copied().collect()
    }

    #[test]
    fn nothing_new_says_nothing() {
        let c = counts(&[("rate_limited", 4)]);
        assert_eq!(describe(&c, &c, "in the last 10 s"), None);
        assert_eq!(describe(&Counts::new(), &Counts::new(), "x"), None);
    }

    #[test]
    fn only_the_growth_is_reported_with_what_it_means() {
        let before = counts(&[("rate_limited", 4), ("replay", 1)]);
        let now = counts(&[("rate_limited", 6), ("replay", 1), ("not_permitted", 1)]);
        assert_eq!(
            describe(&before, &now, "in the last 10 s").as_deref(),
            Some(
                "refused 3 handshakes in the last 10 s: not_permitted 1 (hotkey not in \
                 --validators), rate_limited 2 (over 30 handshakes a minute from one IP \
                 address)"
            )
        );
    }

    #[test]
    fn one_refusal_is_singular_and_unknown_codes_are_named_bare() {
        let now = counts(&[("bad_nonce", 1)]);
        assert_eq!(
            describe(&Counts::new(), &now, "in the last 1 s").as_deref(),
            Some("refused 1 handshake in the last 1 s: bad_nonce 1")
        );
    }
}
