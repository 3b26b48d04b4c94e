//! The published btlightning 0.2.15, with its async or its sync (blocking-pool) echo.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btlightning::{
    AsyncSynapseHandler, LightningClient, LightningServer, LightningServerConfig, QuicAxonInfo,
    QuicRequest, Sr25519Signer, SynapseHandler,
};

use super::{
    hotkey, ManyConns, SetupKind, System, MINER_SEED, REQUEST_TIMEOUT, SYNAPSE, VALIDATOR_SEED,
};
use crate::exec::{run_all, run_pool, run_sequential, Exec};

type Data = HashMap<String, rmpv::Value>;

struct AsyncEcho;

#[async_trait::async_trait]
impl AsyncSynapseHandler for AsyncEcho {
    async fn handle(&self, _synapse: &str, data: Data) -> btlightning::Result<Data> {
        Ok(data)
    }
}

struct SyncEcho;

impl SynapseHandler for SyncEcho {
    fn handle(&self, _synapse: &str, data: Data) -> btlightning::Result<Data> {
        Ok(data)
    }
}

struct Server {
    server: Arc<LightningServer>,
    addr: SocketAddr,
    hotkey: String,
}

/// btlightning on a tokio runtime.
pub struct BtlSys {
    name: &'static str,
    exec: Exec,
    sync_handler: bool,
    /// (own server, if not remote; client; the axon it talks to).
    main: Option<(Option<Server>, Arc<LightningClient>, QuicAxonInfo)>,
    fan: Option<(Vec<Server>, Arc<LightningClient>, Vec<QuicAxonInfo>)>,
    many_server: Option<Server>,
    many_clients: Vec<LightningClient>,
}

fn data_map(size: usize) -> Data {
    let mut m = HashMap::new();
    m.insert(
        "payload".to_owned(),
        rmpv::Value::Binary(super::payload_bytes(size)),
    );
    m
}

fn axon(server: &Server) -> QuicAxonInfo {
    QuicAxonInfo::new(
        server.hotkey.clone(),
        server.addr.ip().to_string(),
        server.addr.port(),
        4,
    )
}

fn remote_axon(addr: SocketAddr, hotkey: &str) -> QuicAxonInfo {
    QuicAxonInfo::new(hotkey.to_owned(), addr.ip().to_string(), addr.port(), 4)
}

async fn echo(client: &LightningClient, axon: &QuicAxonInfo, data: &Data) -> Result<(), String> {
    let request = QuicRequest::new(SYNAPSE.to_owned(), data.clone());
    let response = client
        .query_axon_with_timeout(axon.clone(), request, REQUEST_TIMEOUT)
        .await
        .map_err(|e| format!("query: {e}"))?;
    if !response.success {
        return Err(format!("handler error: {:?}", response.error));
    }
    if response.data != *data {
        return Err("echo mismatch".into());
    }
    Ok(())
}

async fn new_client(seed: [u8; 32], axons: Vec<QuicAxonInfo>) -> Result<LightningClient, String> {
    let mut client = LightningClient::new(hotkey(&seed));
    client.set_signer(Box::new(Sr25519Signer::from_seed(seed)));
    client
        .initialize_connections(axons.clone())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let authenticated = client.authenticated_hotkeys().await;
    for a in &axons {
        if !authenticated.contains(&a.hotkey) {
            return Err(format!("not authenticated with {}:{}", a.ip, a.port));
        }
    }
    Ok(client)
}

impl BtlSys {
    /// btlightning with an async (`sync_handler == false`) or sync echo.
    pub fn new(threads: usize, sync_handler: bool) -> Result<Self, String> {
        Ok(Self {
            name: if sync_handler {
                "btlightning-sync"
            } else {
                "btlightning"
            },
            exec: Exec::tokio(threads)?,
            sync_handler,
            main: None,
            fan: None,
            many_server: None,
            many_clients: Vec::new(),
        })
    }

    fn start_server(&self, seed: [u8; 32], many: Option<ManyConns>) -> Result<Server, String> {
        let sync_handler = self.sync_handler;
        let exec = &self.exec;
        let server = exec.block_on(async move {
            let mut server = match many {
                Some(m) => {
                    let config = LightningServerConfig::builder()
                        .max_connections(m.n + 16)
                        .max_handshake_attempts_per_minute(((m.n as u32) * 4).max(1000))
                        .build()
                        .map_err(|e| format!("config: {e}"))?;
                    LightningServer::with_config(hotkey(&seed), "127.0.0.1".into(), 0, config)
                }
                None => LightningServer::new(hotkey(&seed), "127.0.0.1".into(), 0),
            }
            .map_err(|e| format!("server: {e}"))?;
            server.set_miner_keypair(seed);
            if sync_handler {
                server
                    .register_synapse_handler(SYNAPSE.into(), Arc::new(SyncEcho))
                    .await
            } else {
                server
                    .register_async_synapse_handler(SYNAPSE.into(), Arc::new(AsyncEcho))
                    .await
            }
            .map_err(|e| format!("register: {e}"))?;
            server.start().await.map_err(|e| format!("start: {e}"))?;
            Ok::<_, String>(Arc::new(server))
        })?;
        let addr = server.local_addr().map_err(|e| format!("addr: {e}"))?;
        let serving = server.clone();
        drop(exec.spawn(async move {
            let _ = serving.serve_forever().await;
        }));
        Ok(Server {
            server,
            addr,
            hotkey: hotkey(&seed),
        })
    }

    fn stop(&self, server: Server) {
        self.exec.block_on(async move {
            let _ = server.server.stop().await;
        });
    }
}

impl System for BtlSys {
    fn name(&self) -> &'static str {
        self.name
    }

    fn baseline(&self) -> &'static str {
        self.name
    }

    fn open(&mut self) -> Result<(), String> {
        let server = self.start_server(MINER_SEED, None)?;
        let axon = axon(&server);
        let client = self
            .exec
            .block_on(new_client(VALIDATOR_SEED, vec![axon.clone()]))?;
        self.main = Some((Some(server), Arc::new(client), axon));
        Ok(())
    }

    fn open_remote(&mut self, addr: SocketAddr, hotkey: &str) -> Result<(), String> {
        let axon = remote_axon(addr, hotkey);
        let client = self
            .exec
            .block_on(new_client(VALIDATOR_SEED, vec![axon.clone()]))?;
        self.main = Some((None, Arc::new(client), axon));
        Ok(())
    }

    fn setup_remote(
        &mut self,
        addr: SocketAddr,
        hotkey: &str,
        seed: [u8; 32],
        kind: SetupKind,
    ) -> Result<Duration, String> {
        let axon = remote_axon(addr, hotkey);
        let data = data_map(64);
        let t = Instant::now();
        let result = self.exec.block_on(async {
            let client = match kind {
                SetupKind::Authenticated => new_client(seed, vec![axon.clone()]).await?,
                SetupKind::FirstReply => {
                    // No connect call: the endpoint only, then the query dials on demand.
                    let mut client = LightningClient::new(super::hotkey(&seed));
                    client.set_signer(Box::new(Sr25519Signer::from_seed(seed)));
                    client
                        .create_endpoint()
                        .await
                        .map_err(|e| format!("endpoint: {e}"))?;
                    echo(&client, &axon, &data).await?;
                    client
                }
            };
            Ok::<_, String>(client)
        });
        let elapsed = t.elapsed();
        let client = result?;
        self.exec.block_on(async move {
            let _ = client.close_all_connections().await;
            drop(client);
        });
        Ok(elapsed)
    }

    fn close(&mut self) {
        if let Some((server, client, _)) = self.main.take() {
            self.exec.block_on(async move {
                let _ = client.close_all_connections().await;
            });
            if let Some(server) = server {
                self.stop(server);
            }
        }
    }

    fn latency(&mut self, size: usize, n: usize) -> Result<Vec<u64>, String> {
        let (_, client, axon) = self.main.as_ref().ok_or("not open")?;
        let (client, axon, data) = (client.clone(), axon.clone(), Arc::new(data_map(size)));
        run_sequential(&self.exec, n, move || {
            let (client, axon, data) = (client.clone(), axon.clone(), data.clone());
            async move { echo(&client, &axon, &data).await }
        })
    }

    fn throughput(
        &mut self,
        size: usize,
        concurrency: usize,
        budget: Duration,
        max: u64,
    ) -> Result<(u64, Duration), String> {
        let (_, client, axon) = self.main.as_ref().ok_or("not open")?;
        let (client, axon, data) = (client.clone(), axon.clone(), Arc::new(data_map(size)));
        let deadline = Instant::now() + budget;
        run_pool(&self.exec, concurrency, deadline, max, move || {
            let (client, axon, data) = (client.clone(), axon.clone(), data.clone());
            async move { echo(&client, &axon, &data).await }
        })
    }

    fn setup_once(&mut self) -> Result<Duration, String> {
        let server = self.start_server(MINER_SEED, None)?;
        let axon = axon(&server);
        let data = data_map(64);
        let t = Instant::now();
        let result = self.exec.block_on(async {
            let client = new_client(VALIDATOR_SEED, vec![axon.clone()]).await?;
            echo(&client, &axon, &data).await?;
            Ok::<_, String>(client)
        });
        let elapsed = t.elapsed();
        let outcome = match result {
            Ok(client) => {
                self.exec.block_on(async move {
                    let _ = client.close_all_connections().await;
                    drop(client);
                });
                Ok(elapsed)
            }
            Err(e) => Err(e),
        };
        self.stop(server);
        outcome
    }

    fn fanout_open(&mut self, servers: usize) -> Result<Duration, String> {
        let mut list = Vec::with_capacity(servers);
        for k in 0..servers {
            list.push(self.start_server(super::fan_seed(k), None)?);
        }
        let axons: Vec<_> = list.iter().map(axon).collect();
        let t = Instant::now();
        let client = self
            .exec
            .block_on(new_client(VALIDATOR_SEED, axons.clone()))?;
        let elapsed = t.elapsed();
        self.fan = Some((list, Arc::new(client), axons));
        Ok(elapsed)
    }

    fn fanout_round(&mut self, size: usize) -> Result<Duration, String> {
        let (_, client, axons) = self.fan.as_ref().ok_or("fan-out not open")?;
        let data = Arc::new(data_map(size));
        let exchanges = axons.iter().map(|axon| {
            let (client, axon, data) = (client.clone(), axon.clone(), data.clone());
            async move { echo(&client, &axon, &data).await }
        });
        run_all(&self.exec, exchanges)
    }

    fn fanout_close(&mut self) {
        if let Some((servers, client, _)) = self.fan.take() {
            self.exec.block_on(async move {
                let _ = client.close_all_connections().await;
            });
            for s in servers {
                self.stop(s);
            }
        }
    }

    fn start_many_server(&mut self, cfg: ManyConns) -> Result<(SocketAddr, String), String> {
        let server = self.start_server(MINER_SEED, Some(cfg))?;
        let out = (server.addr, hotkey(&MINER_SEED));
        self.many_server = Some(server);
        Ok(out)
    }

    fn stop_many_server(&mut self) {
        if let Some(s) = self.many_server.take() {
            self.stop(s);
        }
    }

    fn connect_many(
        &mut self,
        addr: SocketAddr,
        hotkey: &str,
        n: usize,
    ) -> Result<Duration, String> {
        let axon = QuicAxonInfo::new(hotkey.to_owned(), addr.ip().to_string(), addr.port(), 4);
        let data = Arc::new(data_map(64));
        let t = Instant::now();
        let mut clients = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            let wave = (n - i).min(32);
            let joins: Vec<_> = (i..i + wave)
                .map(|k| {
                    let (axon, data) = (axon.clone(), data.clone());
                    self.exec.spawn(async move {
                        // Under a wave of handshakes btlightning now and then leaves a
                        // validator unauthenticated (no error, just no route). This cell
                        // measures memory per connection, so such a validator tries again
                        // (at most twice more) instead of failing the whole cell.
                        let mut attempt = 1;
                        loop {
                            let result = async {
                                let client =
                                    new_client(super::many_seed(k), vec![axon.clone()]).await?;
                                echo(&client, &axon, &data).await?;
                                Ok::<_, String>(client)
                            }
                            .await;
                            match result {
                                Err(e) if attempt < 3 => {
                                    eprintln!("btlightning validator {k}: {e}; trying again");
                                    attempt += 1;
                                }
                                other => return other,
                            }
                        }
                    })
                })
                .collect();
            let wave_clients = self.exec.block_on(async {
                let mut out = Vec::new();
                for j in joins {
                    out.push(j.await??);
                }
                Ok::<_, String>(out)
            })?;
            clients.extend(wave_clients);
            i += wave;
        }
        self.many_clients = clients;
        Ok(t.elapsed())
    }

    fn drop_many_clients(&mut self) {
        let clients = std::mem::take(&mut self.many_clients);
        self.exec.block_on(async move {
            for c in &clients {
                let _ = c.close_all_connections().await;
            }
            drop(clients);
        });
    }
}
