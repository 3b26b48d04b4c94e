//! A loopback UDP relay between one client and one server that counts the QUIC Retry
//! packets the server sends. Neither endpoint exposes how many Retries it went through,
//! so the relay observes them on the wire instead.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::UdpSocket;

/// QUIC version 1 (RFC 9000).
const QUIC_V1: [u8; 4] = [0, 0, 0, 1];

/// Whether a datagram starts with a QUIC v1 long-header packet, and of which type
/// (RFC 9000 §17.2: 0 Initial, 1 0-RTT, 2 Handshake, 3 Retry).
fn long_header_type(datagram: &[u8]) -> Option<u8> {
    let first = *datagram.first()?;
    if first & 0x80 == 0 || datagram.get(1..5)? != QUIC_V1 {
        return None;
    }
    Some((first >> 4) & 0x03)
}

#[derive(Debug, Default)]
struct Counters {
    retries: AtomicUsize,
    long_headers: AtomicUsize,
}

/// Forwards datagrams between the first client that writes to [`addr`](Self::addr) and
/// the server, counting the server's Retry packets.
#[derive(Debug)]
pub struct RetryCountingRelay {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl RetryCountingRelay {
    /// Starts relaying to `server`. Must run inside a tokio runtime.
    pub async fn start(server: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").await.expect("relay front");
        let back = UdpSocket::bind("127.0.0.1:0").await.expect("relay back");
        back.connect(server).await.expect("relay back connect");
        let addr = front.local_addr().expect("relay addr");
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(relay(front, back, counters.clone()));
        Self {
            addr,
            counters,
            task,
        }
    }

    /// Where the client should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Retry packets the server sent so far.
    pub fn retries(&self) -> usize {
        self.counters.retries.load(Ordering::SeqCst)
    }

    /// Long-header packets seen in either direction so far.
    pub fn long_header_packets(&self) -> usize {
        self.counters.long_headers.load(Ordering::SeqCst)
    }

    /// Stops relaying.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn relay(front: UdpSocket, back: UdpSocket, counters: Arc<Counters>) {
    let mut client: Option<SocketAddr> = None;
    let mut up = vec![0u8; 65_536];
    let mut down = vec![0u8; 65_536];
    loop {
        tokio::select! {
            received = front.recv_from(&mut up) => {
                let Ok((n, from)) = received else { return };
                client = Some(from);
                if long_header_type(&up[..n]).is_some() {
                    counters.long_headers.fetch_add(1, Ordering::SeqCst);
                }
                let _ = back.send(&up[..n]).await;
            }
            received = back.recv(&mut down) => {
                let Ok(n) = received else { return };
                match long_header_type(&down[..n]) {
                    Some(3) => {
                        counters.retries.fetch_add(1, Ordering::SeqCst);
                        counters.long_headers.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(_) => {
                        counters.long_headers.fetch_add(1, Ordering::SeqCst);
                    }
                    None => {}
                }
                if let Some(to) = client {
                    let _ = front.send_to(&down[..n], to).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::long_header_type;

    #[test]
    fn classifies_long_headers() {
        // Initial, Handshake and Retry of QUIC v1; a short header; another version.
        assert_eq!(long_header_type(&[0xc3, 0, 0, 0, 1, 8]), Some(0));
        assert_eq!(long_header_type(&[0xe1, 0, 0, 0, 1, 8]), Some(2));
        assert_eq!(long_header_type(&[0xf0, 0, 0, 0, 1, 8]), Some(3));
        assert_eq!(long_header_type(&[0x41, 0, 0, 0, 1]), None);
        assert_eq!(long_header_type(&[0xf0, 0x6b, 0x33, 0x43, 0xcf]), None);
        assert_eq!(long_header_type(&[]), None);
    }
}
