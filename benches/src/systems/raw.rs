//! The QUIC floor: plain quinn, one bidirectional stream per request carrying the same
//! 5-byte-framed MessagePack SynapsePacket/SynapseResponse, and no application handshake.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lightning_proto::frame::{MessageType, FRAME_HEADER_LEN};
use lightning_proto::message::{DataMap, SynapsePacket, SynapseResponse, WireMessage};
use quinn::rustls;

use super::{ManyConns, SetupKind, System, REQUEST_TIMEOUT, SYNAPSE};
use crate::exec::{run_all, run_pool, run_sequential, Exec};

/// Largest frame either side reads (the protocol's default maximum).
const MAX_FRAME: usize = 64 << 20;
/// Same socket buffers as Lightning asks for, so the floor is not held back by drops.
const SOCKET_BUFFER: usize = 4 << 20;

struct Server {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
}

/// Raw quinn echo on a tokio runtime.
pub struct RawQuinn {
    exec: Exec,
    client_config: quinn::ClientConfig,
    server_config: quinn::ServerConfig,
    /// (own server, if not remote; client endpoint; connection).
    main: Option<(Option<Server>, quinn::Endpoint, quinn::Connection)>,
    fan: Option<(Vec<Server>, quinn::Endpoint, Vec<quinn::Connection>)>,
    many_server: Option<Server>,
    many_clients: Vec<(quinn::Endpoint, quinn::Connection)>,
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn configs() -> Result<(quinn::ClientConfig, quinn::ServerConfig), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .map_err(|e| format!("cert: {e}"))?;
    let cert_der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()),
    );
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)
        .map_err(|e| format!("tls: {e}"))?;
    server_tls.alpn_protocols = vec![b"btlightning".to_vec()];
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![b"btlightning".to_vec()];

    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(128u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    // Lightning and btlightning keep idle connections alive; without this the WAN cells'
    // long-lived quinn-raw connection idles out (30 s) while the other systems take their turns.
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(5)));
    let transport = Arc::new(transport);

    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|e| format!("quic tls: {e}"))?,
    ));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
            .map_err(|e| format!("quic tls: {e}"))?,
    ));
    client.transport_config(transport);
    Ok((client, server))
}

fn socket() -> Result<UdpSocket, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let state =
        quinn::udp::UdpSocketState::new((&socket).into()).map_err(|e| format!("udp: {e}"))?;
    let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
    let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
    Ok(socket)
}

fn endpoint(server: Option<quinn::ServerConfig>) -> Result<quinn::Endpoint, String> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket()?,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| format!("endpoint: {e}"))
}

async fn serve(endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = incoming.await else { return };
            while let Ok((send, recv)) = conn.accept_bi().await {
                tokio::spawn(answer(send, recv));
            }
        });
    }
}

async fn answer(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let Ok(frame) = recv.read_to_end(MAX_FRAME + FRAME_HEADER_LEN).await else {
        return;
    };
    let Some(request) = parse::<SynapsePacket>(frame, MessageType::SynapsePacket) else {
        let _ = send.reset(1u32.into());
        return;
    };
    let response = SynapseResponse {
        success: true,
        data: request.data,
        timestamp: now_secs(),
        error: None,
    };
    let Ok(encoded) = response.encode() else {
        return;
    };
    let mut segments = encoded.into_segments();
    if send.write_all_chunks(&mut segments).await.is_ok() {
        let _ = send.finish();
        // Keep the stream until the peer has everything, as any server must.
        let _ = send.stopped().await;
    }
}

fn parse<M: WireMessage>(frame: Vec<u8>, ty: MessageType) -> Option<M> {
    if frame.len() < FRAME_HEADER_LEN || frame[0] != u8::from(ty) {
        return None;
    }
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    let frame = Bytes::from(frame);
    let payload = frame.slice(FRAME_HEADER_LEN..);
    if payload.len() != len {
        return None;
    }
    M::decode(&payload).ok()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn echo(conn: &quinn::Connection, data: &DataMap) -> Result<(), String> {
    let packet = SynapsePacket {
        synapse_type: SYNAPSE.to_owned(),
        data: data.clone(),
        timestamp: now_secs(),
    };
    let mut segments = packet
        .encode()
        .map_err(|e| format!("encode: {e}"))?
        .into_segments();
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
        send.write_all_chunks(&mut segments)
            .await
            .map_err(|e| format!("write: {e}"))?;
        send.finish().map_err(|e| format!("finish: {e}"))?;
        recv.read_to_end(MAX_FRAME + FRAME_HEADER_LEN)
            .await
            .map_err(|e| format!("read: {e}"))
    };
    let frame = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "timeout".to_owned())??;
    let response: SynapseResponse =
        parse(frame, MessageType::SynapseResponse).ok_or("bad response frame")?;
    if !response.success || response.data != *data {
        return Err("echo mismatch".into());
    }
    Ok(())
}

fn data_map(size: usize) -> Result<DataMap, String> {
    DataMap::from_raw(super::payload_map_msgpack(size).into()).map_err(|e| format!("payload: {e}"))
}

impl RawQuinn {
    /// A raw quinn echo on a tokio runtime with `threads` workers.
    pub fn new(threads: usize) -> Result<Self, String> {
        let (client_config, server_config) = configs()?;
        Ok(Self {
            exec: Exec::tokio(threads)?,
            client_config,
            server_config,
            main: None,
            fan: None,
            many_server: None,
            many_clients: Vec::new(),
        })
    }

    fn start_server(&self) -> Result<Server, String> {
        let _guard = self.exec.enter();
        let endpoint = endpoint(Some(self.server_config.clone()))?;
        let addr = endpoint.local_addr().map_err(|e| format!("addr: {e}"))?;
        drop(self.exec.spawn(serve(endpoint.clone())));
        Ok(Server { endpoint, addr })
    }

    fn client(&self) -> Result<quinn::Endpoint, String> {
        let _guard = self.exec.enter();
        let mut ep = endpoint(None)?;
        ep.set_default_client_config(self.client_config.clone());
        Ok(ep)
    }
}

async fn connect(ep: &quinn::Endpoint, addr: SocketAddr) -> Result<quinn::Connection, String> {
    ep.connect(addr, "localhost")
        .map_err(|e| format!("connect: {e}"))?
        .await
        .map_err(|e| format!("connect: {e}"))
}

impl System for RawQuinn {
    fn name(&self) -> &'static str {
        "quinn-raw"
    }

    fn baseline(&self) -> &'static str {
        "btlightning"
    }

    fn open(&mut self) -> Result<(), String> {
        let server = self.start_server()?;
        let ep = self.client()?;
        let conn = self.exec.block_on(connect(&ep, server.addr))?;
        self.main = Some((Some(server), ep, conn));
        Ok(())
    }

    fn open_remote(&mut self, addr: SocketAddr, _hotkey: &str) -> Result<(), String> {
        let ep = self.client()?;
        let conn = self.exec.block_on(connect(&ep, addr))?;
        self.main = Some((None, ep, conn));
        Ok(())
    }

    fn setup_remote(
        &mut self,
        addr: SocketAddr,
        _hotkey: &str,
        _seed: [u8; 32],
        kind: SetupKind,
    ) -> Result<Duration, String> {
        let data = data_map(64)?;
        let t = Instant::now();
        let ep = self.client()?;
        let result = self.exec.block_on(async {
            let conn = connect(&ep, addr).await?;
            if kind == SetupKind::FirstReply {
                echo(&conn, &data).await?;
            }
            Ok::<_, String>(conn)
        });
        let elapsed = t.elapsed();
        if let Ok(conn) = &result {
            conn.close(0u32.into(), b"done");
        }
        let _guard = self.exec.enter();
        drop(ep);
        result.map(|_| elapsed)
    }

    fn close(&mut self) {
        if let Some((server, ep, conn)) = self.main.take() {
            conn.close(0u32.into(), b"done");
            self.exec.block_on(async move {
                ep.wait_idle().await;
                if let Some(server) = server {
                    server.endpoint.close(0u32.into(), b"done");
                }
            });
        }
    }

    fn latency(&mut self, size: usize, n: usize) -> Result<Vec<u64>, String> {
        let (_, _, conn) = self.main.as_ref().ok_or("not open")?;
        let (conn, data) = (conn.clone(), data_map(size)?);
        run_sequential(&self.exec, n, move || {
            let (conn, data) = (conn.clone(), data.clone());
            async move { echo(&conn, &data).await }
        })
    }

    fn throughput(
        &mut self,
        size: usize,
        concurrency: usize,
        budget: Duration,
        max: u64,
    ) -> Result<(u64, Duration), String> {
        let (_, _, conn) = self.main.as_ref().ok_or("not open")?;
        let (conn, data) = (conn.clone(), data_map(size)?);
        let deadline = Instant::now() + budget;
        run_pool(&self.exec, concurrency, deadline, max, move || {
            let (conn, data) = (conn.clone(), data.clone());
            async move { echo(&conn, &data).await }
        })
    }

    fn setup_once(&mut self) -> Result<Duration, String> {
        let server = self.start_server()?;
        let data = data_map(64)?;
        let t = Instant::now();
        let ep = self.client()?;
        let result = self.exec.block_on(async {
            let conn = connect(&ep, server.addr).await?;
            echo(&conn, &data).await?;
            Ok::<_, String>(conn)
        });
        let elapsed = t.elapsed();
        if let Ok(conn) = &result {
            conn.close(0u32.into(), b"done");
        }
        server.endpoint.close(0u32.into(), b"done");
        drop(ep);
        result.map(|_| elapsed)
    }

    fn fanout_open(&mut self, servers: usize) -> Result<Duration, String> {
        let mut list = Vec::with_capacity(servers);
        for _ in 0..servers {
            list.push(self.start_server()?);
        }
        let t = Instant::now();
        let ep = self.client()?;
        let addrs: Vec<_> = list.iter().map(|s| s.addr).collect();
        let conns = self.exec.block_on(async {
            let mut pending = Vec::new();
            for addr in &addrs {
                pending.push(
                    ep.connect(*addr, "localhost")
                        .map_err(|e| format!("connect: {e}"))?,
                );
            }
            let mut out = Vec::new();
            for p in pending {
                out.push(p.await.map_err(|e| format!("connect: {e}"))?);
            }
            Ok::<_, String>(out)
        })?;
        let elapsed = t.elapsed();
        self.fan = Some((list, ep, conns));
        Ok(elapsed)
    }

    fn fanout_round(&mut self, size: usize) -> Result<Duration, String> {
        let (_, _, conns) = self.fan.as_ref().ok_or("fan-out not open")?;
        let data = data_map(size)?;
        let exchanges = conns.iter().map(|conn| {
            let (conn, data) = (conn.clone(), data.clone());
            async move { echo(&conn, &data).await }
        });
        run_all(&self.exec, exchanges)
    }

    fn fanout_close(&mut self) {
        if let Some((servers, ep, conns)) = self.fan.take() {
            for c in conns {
                c.close(0u32.into(), b"done");
            }
            for s in servers {
                s.endpoint.close(0u32.into(), b"done");
            }
            let _guard = self.exec.enter();
            drop(ep);
        }
    }

    fn start_many_server(&mut self, _cfg: ManyConns) -> Result<(SocketAddr, String), String> {
        let server = self.start_server()?;
        let out = (server.addr, String::new());
        self.many_server = Some(server);
        Ok(out)
    }

    fn stop_many_server(&mut self) {
        if let Some(s) = self.many_server.take() {
            s.endpoint.close(0u32.into(), b"done");
        }
    }

    fn connect_many(
        &mut self,
        addr: SocketAddr,
        _hotkey: &str,
        n: usize,
    ) -> Result<Duration, String> {
        let data = data_map(64)?;
        let t = Instant::now();
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            let ep = self.client()?;
            clients.push(ep);
        }
        let mut out = Vec::with_capacity(n);
        for wave in clients.chunks(32) {
            let joins: Vec<_> = wave
                .iter()
                .map(|ep| {
                    let (ep, data) = (ep.clone(), data.clone());
                    self.exec.spawn(async move {
                        let conn = connect(&ep, addr).await?;
                        echo(&conn, &data).await?;
                        Ok::<_, String>((ep, conn))
                    })
                })
                .collect();
            let got = self.exec.block_on(async {
                let mut v = Vec::new();
                for j in joins {
                    v.push(j.await??);
                }
                Ok::<_, String>(v)
            })?;
            out.extend(got);
        }
        self.many_clients = out;
        Ok(t.elapsed())
    }

    fn drop_many_clients(&mut self) {
        let clients = std::mem::take(&mut self.many_clients);
        for (_, conn) in &clients {
            conn.close(0u32.into(), b"done");
        }
        let _guard = self.exec.enter();
        drop(clients);
    }
}
