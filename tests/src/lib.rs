//! Shared helpers for the workspace-level integration tests, and the loopback suite that
//! runs unchanged on every runtime adapter (`tests/loopback.rs` instantiates it per runtime).
#![deny(missing_docs)]
// Test helpers: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod suite;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lightning_driver::{
    DataMap, LightningClient, LightningServer, QuicAxonInfo, QuicRequest, Runtime, ServerBuilder,
    Timer,
};

/// Seed of the test miner.
pub const MINER_SEED: [u8; 32] = [0x11; 32];
/// Seed of the test validator.
pub const VALIDATOR_SEED: [u8; 32] = [0x22; 32];

/// Runs `future` on a fresh two-worker tokio runtime.
pub fn tokio_block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// Runs `future` with smol (its global executor serves the spawned endpoint tasks).
pub fn smol_block_on<F: Future>(future: F) -> F::Output {
    smol::block_on(future)
}

/// Sleeps using the runtime's own timer.
pub async fn sleep<R: Runtime>(runtime: &R, duration: Duration) {
    let mut timer = runtime.timer(Instant::now() + duration);
    futures_lite::future::poll_fn(|cx| timer.poll_elapsed(cx)).await;
}

/// `{"payload": <size bytes>}` with a recognisable pattern.
pub fn payload(size: usize) -> DataMap {
    let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    DataMap::from_values([("payload".to_string(), bytes.into())]).expect("string key")
}

/// Sends `synapse` one echo per size and checks each comes back byte-identical.
pub async fn assert_echoes(
    client: &LightningClient,
    axon: &QuicAxonInfo,
    synapse: &str,
    sizes: &[usize],
) {
    for &size in sizes {
        let data = payload(size);
        let response = client
            .query_axon(axon, QuicRequest::new(synapse, data.clone()))
            .await
            .expect("query")
            .into_result()
            .expect("success");
        assert_eq!(response.data, data, "{synapse} at {size} B");
    }
}

/// Asks the standard `stream` handler for `n` chunks of `chunk_size` bytes and checks
/// their count and sizes.
pub async fn assert_stream(client: &LightningClient, axon: &QuicAxonInfo, n: u64, chunk_size: u64) {
    let request = DataMap::from_values([
        ("n".to_string(), n.into()),
        ("chunk_size".to_string(), chunk_size.into()),
    ])
    .expect("string keys");
    let chunks = client
        .query_axon_stream(axon, QuicRequest::new("stream", request))
        .await
        .expect("stream")
        .collect_all()
        .await
        .expect("chunks");
    assert_eq!(chunks.len() as u64, n);
    assert!(chunks.iter().all(|c| c.len() as u64 == chunk_size));
}

/// A TLS 1.3 client configuration (ring, ALPN `btlightning`) that accepts any server
/// certificate, like btlightning's own client: for raw QUIC peers in tests (attackers,
/// hand-built handshakes) whose identity, if any, is the sr25519 handshake's business.
pub fn accept_any_cert_tls() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![lightning_driver::proto::tls::ALPN.to_vec()];
    tls
}

/// Accepts any server certificate; TLS 1.2 never comes up (the config is TLS 1.3 only).
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &rustls::pki_types::CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The address record of a running server.
pub fn axon_of(server: &LightningServer) -> QuicAxonInfo {
    QuicAxonInfo::from_addr(server.hotkey(), server.local_addr())
}

/// A miner with key `seed` on 127.0.0.1 (port 0) with the handlers every suite uses:
/// `echo` (sync) and `echo_async` return the data map unchanged, `fail` returns an error.
pub fn basic_server<R: Runtime>(runtime: R, seed: [u8; 32]) -> ServerBuilder<R> {
    ServerBuilder::with_runtime(runtime)
        .seed(seed)
        .bind_addr(([127, 0, 0, 1], 0).into())
        .handler("echo", |data, _ctx| Ok::<_, String>(data))
        .async_handler(
            "echo_async",
            |data, _ctx| async move { Ok::<_, String>(data) },
        )
        .handler("fail", |_data, _ctx| {
            Err::<DataMap, _>("deliberate failure")
        })
}

/// A miner on loopback with the standard test handlers:
/// * `echo` (sync) and `echo_async` return the data map unchanged;
/// * `fail` returns an error;
/// * `slow` waits for `ms` milliseconds (default 5 s), reporting cancellation through
///   `cancelled` when the request is cancelled;
/// * `stream` answers `{"n", "chunk_size"}` with `n` chunks of `chunk_size` bytes, byte
///   value = chunk index % 256;
/// * `panic` panics; `panic_async` panics when first polled, `panic_later` after waiting
///   once (so in its own task).
pub fn standard_server<R: Runtime>(runtime: R, cancelled: Option<Signal>) -> ServerBuilder<R> {
    let slow_runtime = runtime.clone();
    basic_server(runtime, MINER_SEED)
        .handler("panic", |_data, _ctx| -> Result<DataMap, String> {
            panic!("deliberate panic")
        })
        .async_handler("panic_async", |_data, _ctx| async move {
            panic!("deliberate panic") as Result<DataMap, String>
        })
        .async_handler("panic_later", |_data, _ctx| async move {
            futures_lite::future::yield_now().await;
            panic!("deliberate panic") as Result<DataMap, String>
        })
        .async_handler("slow", move |data, ctx| {
            let runtime = slow_runtime.clone();
            let cancelled = cancelled.clone();
            async move {
                let ms = data.get("ms").and_then(|v| v.as_u64()).unwrap_or(5_000);
                let finished = futures_lite::future::or(
                    async {
                        sleep(&runtime, Duration::from_millis(ms)).await;
                        true
                    },
                    async {
                        ctx.cancelled().await;
                        false
                    },
                )
                .await;
                if !finished {
                    if let Some(tx) = cancelled {
                        tx.notify();
                    }
                    return Err("cancelled".to_string());
                }
                Ok(data)
            }
        })
        .streaming_handler("stream", |data, _ctx, sink| async move {
            let n = data.get("n").and_then(|v| v.as_u64()).unwrap_or(0);
            let size = data.get("chunk_size").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
            for i in 0..n {
                sink.send(vec![(i % 256) as u8; size])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })
}

/// Counts notifications across tasks and runtimes (std only, so the suite needs no
/// runtime-specific channel).
#[derive(Debug, Clone, Default)]
pub struct Signal(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Signal {
    /// Records one notification.
    pub fn notify(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many notifications so far.
    pub fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
