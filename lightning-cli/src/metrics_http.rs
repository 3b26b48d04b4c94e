//! `lightning serve --metrics ADDR`: a minimal HTTP/1.1 responder for Prometheus scrapes.
//!
//! `GET /metrics` answers the server's metrics in the Prometheus text format; anything
//! else gets 404 or 405. One request per connection (`Connection: close`), a head of at
//! most 8 KiB read within 5 s, and at most 16 scrapes at once: enough for Prometheus, and
//! nothing a stranger on that port can make expensive. The HTTP lives here, in the CLI;
//! the driver only produces the text (`LightningServer::metrics_text`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lightning_tokio::{LightningServer, METRICS_CONTENT_TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; further connections are closed at once.
const MAX_CONCURRENT: usize = 16;

/// Binds the metrics listener (port 0 picks a free port; see `local_addr`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves scrapes on `listener` until the returned task is aborted.
pub fn spawn(listener: TcpListener, server: Arc<LightningServer>) -> tokio::task::JoinHandle<()> {
    let active = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    eprintln!("lightning serve: metrics listener: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONCURRENT {
                active.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            let server = server.clone();
            let active = active.clone();
            tokio::spawn(async move {
                let _ = respond(stream, &server).await;
                active.fetch_sub(1, Ordering::AcqRel);
            });
        }
    })
}

/// Reads one request head and answers it.
async fn respond(mut stream: TcpStream, server: &LightningServer) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        // Timed out, too long, or closed early: nothing worth answering.
        _ => return Ok(()),
    };
    let (status, body) = route(&head, server).await;
    let head_only = head.starts_with("HEAD ");
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        if status.starts_with("200") {
            METRICS_CONTENT_TYPE
        } else {
            "text/plain; charset=utf-8"
        },
        body.len(),
        if head_only { "" } else { body.as_str() },
    );
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}

/// The status line and body for a request head.
async fn route(head: &str, server: &LightningServer) -> (&'static str, String) {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return (
            "404 Not Found",
            "not found; metrics are at /metrics\n".into(),
        );
    }
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "use GET\n".into());
    }
    match server.metrics_text().await {
        Ok(text) => ("200 OK", text),
        Err(e) => ("503 Service Unavailable", format!("{e}\n")),
    }
}

/// Reads until the blank line that ends a request head; `None` if the peer closed first
/// or the head is over `MAX_HEAD`.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}
