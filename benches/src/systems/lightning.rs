//! Lightning on tokio or smol (same driver, different executor).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lightning_driver::{
    ClientBuilder, ClientConfig, CongestionControl, DataMap, Identity, LightningClient,
    LightningServer, QuicAxonInfo, QuicRequest, Runtime, ServerBuilder, TransportOptions,
};

use super::{ManyConns, SetupKind, System, MINER_SEED, REQUEST_TIMEOUT, SYNAPSE, VALIDATOR_SEED};
use crate::exec::{run_all, run_pool, run_sequential, Exec};

/// Validators that connect at once in the many-connections cell.
const WAVE: usize = 32;

/// Lightning with an async (or inline sync) echo handler.
pub struct LightningSys {
    name: &'static str,
    baseline: &'static str,
    exec: Exec,
    sync_handler: bool,
    /// Transport settings of its validators and miners (the congestion controller).
    transport: TransportOptions,
    /// (own server, if not remote; client; the axon it talks to).
    main: Option<(Option<LightningServer>, LightningClient, QuicAxonInfo)>,
    fan: Option<(Vec<LightningServer>, LightningClient, Vec<QuicAxonInfo>)>,
    many_server: Option<LightningServer>,
    many_clients: Vec<LightningClient>,
}

impl LightningSys {
    /// Lightning on a tokio runtime with `threads` workers and an async echo.
    pub fn tokio(threads: usize, sync_handler: bool) -> Result<Self, String> {
        Ok(Self::new(
            if sync_handler {
                "lightning-tokio-sync"
            } else {
                "lightning-tokio"
            },
            if sync_handler {
                "btlightning-sync"
            } else {
                "btlightning"
            },
            Exec::tokio(threads)?,
            sync_handler,
        ))
    }

    /// Lightning on tokio with an async echo and BBR congestion control at both ends.
    pub fn tokio_bbr(threads: usize) -> Result<Self, String> {
        let mut sys = Self::new(
            "lightning-tokio-bbr",
            "btlightning",
            Exec::tokio(threads)?,
            false,
        );
        sys.transport.congestion = CongestionControl::Bbr;
        Ok(sys)
    }

    /// Lightning on a smol executor with `threads` threads and an async echo.
    pub fn smol(threads: usize) -> Result<Self, String> {
        Ok(Self::new(
            "lightning-smol",
            "btlightning",
            Exec::smol(threads)?,
            false,
        ))
    }

    fn new(name: &'static str, baseline: &'static str, exec: Exec, sync_handler: bool) -> Self {
        Self {
            name,
            baseline,
            exec,
            sync_handler,
            transport: TransportOptions::default(),
            main: None,
            fan: None,
            many_server: None,
            many_clients: Vec::new(),
        }
    }

    fn server_builder<R: Runtime>(
        &self,
        rt: R,
        seed: [u8; 32],
        many: Option<ManyConns>,
    ) -> ServerBuilder<R> {
        let mut b = ServerBuilder::with_runtime(rt)
            .seed(seed)
            .bind_addr(([127, 0, 0, 1], 0).into())
            .configure(|c| c.transport = self.transport.clone());
        if let Some(m) = many {
            b = b.configure(|c| {
                c.max_connections = m.n + 16;
                c.max_handshake_attempts_per_minute = (m.n as u32).saturating_mul(4).max(1000);
                // Every validator here shares 127.0.0.1; the per-source cap (16 by default)
                // must admit one whole wave of `connect_many`.
                c.max_unauthenticated_per_ip = c.max_unauthenticated_per_ip.max(WAVE);
            });
        }
        if self.sync_handler {
            b.handler(SYNAPSE, |data, _ctx| Ok::<_, String>(data))
        } else {
            b.async_handler(SYNAPSE, |data, _ctx| async move { Ok::<_, String>(data) })
        }
    }

    fn start_server(
        &self,
        seed: [u8; 32],
        many: Option<ManyConns>,
    ) -> Result<LightningServer, String> {
        let started = match (self.exec.tokio_handle(), self.exec.smol_runtime()) {
            (Some(h), _) => {
                let b = self.server_builder(lightning_tokio::Tokio::new(h), seed, many);
                self.exec.block_on(b.start())
            }
            (None, Some(rt)) => {
                let b = self.server_builder(rt, seed, many);
                self.exec.block_on(b.start())
            }
            _ => return Err("no runtime".into()),
        };
        started.map_err(|e| format!("{}: server start: {e}", self.name))
    }

    /// The default validator configuration with this system's transport settings.
    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            transport: self.transport.clone(),
            ..ClientConfig::default()
        }
    }

    fn build_client(&self, seed: [u8; 32]) -> Result<LightningClient, String> {
        let identity = Identity::from_seed(&seed);
        let bind: SocketAddr = ([127, 0, 0, 1], 0).into();
        let built = match (self.exec.tokio_handle(), self.exec.smol_runtime()) {
            (Some(h), _) => {
                let _guard = h.enter();
                ClientBuilder::with_runtime(lightning_tokio::Tokio::new(h.clone()))
                    .config(self.client_config())
                    .identity(identity)
                    .bind_addr(bind)
                    .build()
            }
            (None, Some(rt)) => {
                lightning_driver_smol_client(rt, identity, bind, self.client_config())
            }
            _ => return Err("no runtime".into()),
        };
        built.map_err(|e| format!("{}: client: {e}", self.name))
    }
}

fn lightning_driver_smol_client(
    rt: lightning_smol::Smol,
    identity: Identity,
    bind: SocketAddr,
    config: ClientConfig,
) -> lightning_driver::Result<LightningClient> {
    ClientBuilder::with_runtime(rt)
        .config(config)
        .identity(identity)
        .bind_addr(bind)
        .build()
}

fn data_map(size: usize) -> Result<DataMap, String> {
    DataMap::from_raw(super::payload_map_msgpack(size).into()).map_err(|e| format!("payload: {e}"))
}

async fn echo(client: &LightningClient, axon: &QuicAxonInfo, data: &DataMap) -> Result<(), String> {
    let response = client
        .query_axon_with_timeout(
            axon,
            QuicRequest::new(SYNAPSE, data.clone()),
            REQUEST_TIMEOUT,
        )
        .await
        .map_err(|e| format!("query: {e}"))?;
    if !response.success {
        return Err(format!("handler error: {:?}", response.error));
    }
    if response.data != *data {
        return Err(format!(
            "echo mismatch: sent {} bytes, got {}",
            data.raw().len(),
            response.data.raw().len()
        ));
    }
    Ok(())
}

async fn connect(client: &LightningClient, axons: Vec<QuicAxonInfo>) -> Result<(), String> {
    let report = client
        .initialize_connections(axons)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if let Some((axon, e)) = report.failed.first() {
        return Err(format!("connect to {}:{}: {e}", axon.ip, axon.port));
    }
    Ok(())
}

impl System for LightningSys {
    fn name(&self) -> &'static str {
        self.name
    }

    fn baseline(&self) -> &'static str {
        self.baseline
    }

    fn open(&mut self) -> Result<(), String> {
        let server = self.start_server(MINER_SEED, None)?;
        let client = self.build_client(VALIDATOR_SEED)?;
        let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());
        self.exec.block_on(connect(&client, vec![axon.clone()]))?;
        self.main = Some((Some(server), client, axon));
        Ok(())
    }

    fn open_remote(&mut self, addr: SocketAddr, hotkey: &str) -> Result<(), String> {
        let client = self.build_client(VALIDATOR_SEED)?;
        let axon = QuicAxonInfo::from_addr(hotkey, addr);
        self.exec.block_on(connect(&client, vec![axon.clone()]))?;
        self.main = Some((None, client, axon));
        Ok(())
    }

    fn setup_remote(
        &mut self,
        addr: SocketAddr,
        hotkey: &str,
        seed: [u8; 32],
        kind: SetupKind,
    ) -> Result<Duration, String> {
        let axon = QuicAxonInfo::from_addr(hotkey, addr);
        let data = data_map(64)?;
        let t = Instant::now();
        let client = self.build_client(seed)?;
        let result = self.exec.block_on(async {
            match kind {
                SetupKind::Authenticated => connect(&client, vec![axon.clone()]).await,
                SetupKind::FirstReply => echo(&client, &axon, &data).await,
            }
        });
        let elapsed = t.elapsed();
        self.exec.block_on(async {
            let _ = client.close_all_connections().await;
            drop(client);
        });
        result.map(|()| elapsed)
    }

    fn close(&mut self) {
        if let Some((server, client, _)) = self.main.take() {
            self.exec.block_on(async {
                let _ = client.close_all_connections().await;
                drop(client);
                if let Some(server) = server {
                    let _ = server.stop().await;
                }
            });
        }
    }

    fn latency(&mut self, size: usize, n: usize) -> Result<Vec<u64>, String> {
        let (_, client, axon) = self.main.as_ref().ok_or("not open")?;
        let (client, axon, data) = (client.clone(), axon.clone(), data_map(size)?);
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
        let (client, axon, data) = (client.clone(), axon.clone(), data_map(size)?);
        let deadline = Instant::now() + budget;
        run_pool(&self.exec, concurrency, deadline, max, move || {
            let (client, axon, data) = (client.clone(), axon.clone(), data.clone());
            async move { echo(&client, &axon, &data).await }
        })
    }

    fn setup_once(&mut self) -> Result<Duration, String> {
        let server = self.start_server(MINER_SEED, None)?;
        let axon = QuicAxonInfo::from_addr(server.hotkey(), server.local_addr());
        let data = data_map(64)?;
        let t = Instant::now();
        let client = self.build_client(VALIDATOR_SEED)?;
        let result = self.exec.block_on(async {
            connect(&client, vec![axon.clone()]).await?;
            echo(&client, &axon, &data).await
        });
        let elapsed = t.elapsed();
        self.exec.block_on(async {
            let _ = client.close_all_connections().await;
            drop(client);
            let _ = server.stop().await;
        });
        result.map(|()| elapsed)
    }

    fn fanout_open(&mut self, servers: usize) -> Result<Duration, String> {
        let mut list = Vec::with_capacity(servers);
        for k in 0..servers {
            list.push(self.start_server(super::fan_seed(k), None)?);
        }
        let axons: Vec<_> = list
            .iter()
            .map(|s| QuicAxonInfo::from_addr(s.hotkey(), s.local_addr()))
            .collect();
        let t = Instant::now();
        let client = self.build_client(VALIDATOR_SEED)?;
        self.exec.block_on(connect(&client, axons.clone()))?;
        let elapsed = t.elapsed();
        self.fan = Some((list, client, axons));
        Ok(elapsed)
    }

    fn fanout_round(&mut self, size: usize) -> Result<Duration, String> {
        let (_, client, axons) = self.fan.as_ref().ok_or("fan-out not open")?;
        let data = data_map(size)?;
        let exchanges = axons.iter().map(|axon| {
            let (client, axon, data) = (client.clone(), axon.clone(), data.clone());
            async move { echo(&client, &axon, &data).await }
        });
        run_all(&self.exec, exchanges)
    }

    fn fanout_close(&mut self) {
        if let Some((servers, client, _)) = self.fan.take() {
            self.exec.block_on(async {
                let _ = client.close_all_connections().await;
                drop(client);
                for s in servers {
                    let _ = s.stop().await;
                }
            });
        }
    }

    fn start_many_server(&mut self, cfg: ManyConns) -> Result<(SocketAddr, String), String> {
        let server = self.start_server(MINER_SEED, Some(cfg))?;
        let out = (server.local_addr(), server.hotkey().to_owned());
        self.many_server = Some(server);
        Ok(out)
    }

    fn stop_many_server(&mut self) {
        if let Some(server) = self.many_server.take() {
            self.exec.block_on(async {
                let _ = server.stop().await;
            });
        }
    }

    fn connect_many(
        &mut self,
        addr: SocketAddr,
        hotkey: &str,
        n: usize,
    ) -> Result<Duration, String> {
        let axon = QuicAxonInfo::from_addr(hotkey, addr);
        let data = data_map(64)?;
        let t = Instant::now();
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            clients.push(self.build_client(super::many_seed(i))?);
        }
        // In waves, so that unauthenticated connections stay few (servers cap them).
        for wave in clients.chunks(WAVE) {
            let joins: Vec<_> = wave
                .iter()
                .map(|client| {
                    let (client, axon, data) = (client.clone(), axon.clone(), data.clone());
                    self.exec.spawn(async move {
                        connect(&client, vec![axon.clone()]).await?;
                        echo(&client, &axon, &data).await
                    })
                })
                .collect();
            self.exec.block_on(async {
                for j in joins {
                    j.await??;
                }
                Ok::<_, String>(())
            })?;
        }
        self.many_clients = clients;
        Ok(t.elapsed())
    }

    fn drop_many_clients(&mut self) {
        let clients = std::mem::take(&mut self.many_clients);
        self.exec.block_on(async {
            for c in &clients {
                let _ = c.close_all_connections().await;
            }
        });
        drop(clients);
    }
}
