//! HandshakeRateLimiter (§5.11).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lightning_proto::handshake::{HandshakeError, HandshakeRateLimiter};

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
}

#[test]
fn third_attempt_with_limit_two_is_rejected() {
    let mut l = HandshakeRateLimiter::new(2, 100);
    l.check_and_record(ip(1), 1000).unwrap();
    l.check_and_record(ip(1), 1000).unwrap();
    assert_eq!(
        l.check_and_record(ip(1), 1001),
        Err(HandshakeError::RateLimited)
    );
    // Refused attempts are not recorded.
    assert_eq!(l.attempts_in_window(ip(1), 1001), 2);
}

#[test]
fn fourth_attempt_with_limit_three_is_rejected() {
    let mut l = HandshakeRateLimiter::new(3, 100);
    for _ in 0..3 {
        l.check_and_record(ip(1), 5).unwrap();
    }
    assert_eq!(
        l.check_and_record(ip(1), 5),
        Err(HandshakeError::RateLimited)
    );
}

#[test]
fn limits_are_per_ip() {
    let mut l = HandshakeRateLimiter::new(1, 100);
    l.check_and_record(ip(1), 1000).unwrap();
    assert!(l.check_and_record(ip(1), 1000).is_err());
    l.check_and_record(ip(2), 1000).unwrap();
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    l.check_and_record(v6, 1000).unwrap();
    assert!(l.check_and_record(v6, 1000).is_err());
    assert_eq!(l.tracked_ips(), 3);
}

#[test]
fn window_slides() {
    let mut l = HandshakeRateLimiter::new(2, 100);
    l.check_and_record(ip(1), 1000).unwrap();
    l.check_and_record(ip(1), 1030).unwrap();
    assert!(l.check_and_record(ip(1), 1059).is_err());
    // At 1060 the attempt at 1000 is still inside (>= now - 60).
    assert!(l.check_and_record(ip(1), 1060).is_err());
    // At 1061 it has left the window.
    l.check_and_record(ip(1), 1061).unwrap();
    assert!(l.check_and_record(ip(1), 1061).is_err());
    // Refusals never extended the window: at 1091 the 1030 attempt is gone.
    l.check_and_record(ip(1), 1091).unwrap();
}

#[test]
fn eviction_at_cap_picks_ip_with_oldest_latest_attempt() {
    let mut l = HandshakeRateLimiter::new(10, 3);
    // ip1 attempted first but also most recently; ip2's latest is oldest.
    l.check_and_record(ip(1), 100).unwrap();
    l.check_and_record(ip(2), 110).unwrap();
    l.check_and_record(ip(3), 120).unwrap();
    l.check_and_record(ip(1), 130).unwrap();
    assert_eq!(l.tracked_ips(), 3);

    l.check_and_record(ip(4), 140).unwrap();
    assert_eq!(l.tracked_ips(), 3);
    assert_eq!(l.attempts_in_window(ip(2), 140), 0, "ip2 evicted");
    assert_eq!(l.attempts_in_window(ip(1), 140), 2);
    assert_eq!(l.attempts_in_window(ip(3), 140), 1);

    // Next new IP evicts ip3 (latest 120).
    l.check_and_record(ip(5), 150).unwrap();
    assert_eq!(l.attempts_in_window(ip(3), 150), 0);
    assert_eq!(l.attempts_in_window(ip(1), 150), 2);
    // A known IP at the cap evicts nobody.
    l.check_and_record(ip(1), 151).unwrap();
    assert_eq!(l.tracked_ips(), 3);
    assert_eq!(l.attempts_in_window(ip(4), 151), 1);
}

#[test]
fn refused_attempt_does_not_refresh_eviction_order() {
    let mut l = HandshakeRateLimiter::new(1, 2);
    l.check_and_record(ip(1), 100).unwrap();
    l.check_and_record(ip(2), 110).unwrap();
    assert!(l.check_and_record(ip(1), 120).is_err());
    l.check_and_record(ip(3), 121).unwrap();
    assert_eq!(
        l.attempts_in_window(ip(1), 121),
        0,
        "ip1's latest recorded attempt is 100"
    );
    assert_eq!(l.attempts_in_window(ip(2), 121), 1);
}

#[test]
fn evict_stale_forgets_quiet_ips() {
    let mut l = HandshakeRateLimiter::new(5, 100);
    l.check_and_record(ip(1), 1000).unwrap();
    l.check_and_record(ip(2), 1050).unwrap();
    l.evict_stale(1060);
    assert_eq!(l.tracked_ips(), 2);
    l.evict_stale(1061);
    assert_eq!(l.tracked_ips(), 1);
    l.evict_stale(1111);
    assert_eq!(l.tracked_ips(), 0);
}

#[test]
fn many_ips_stay_bounded() {
    let mut l = HandshakeRateLimiter::new(30, 1000);
    for i in 0..50_000u32 {
        let addr = IpAddr::V4(Ipv4Addr::from(i));
        l.check_and_record(addr, u64::from(i / 10)).unwrap();
    }
    assert_eq!(l.tracked_ips(), 1000);
}
