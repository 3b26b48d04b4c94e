//! The builder methods the client and server builders share, written once.

/// Expands, inside a builder's `impl`, to the setters both builders have: the signing
/// identity (`seed`, `wallet`, `signer`, `callback_signer`, `identity`), the socket
/// buffers and the core's random seed. The builder needs the fields `identity:
/// Option<Result<Identity>>`, `socket_buffer: usize` and `rng_seed: Option<[u8; 32]>`.
/// `$role` ("validator" or "miner") goes into the documentation.
macro_rules! shared_builder_setters {
    ($role:literal) => {
        #[doc = concat!("Signs as the ", $role, " whose key derives from `seed`.")]
        pub fn seed(self, seed: [u8; 32]) -> Self {
            self.identity(Identity::from_seed(&seed))
        }

        /// Signs as a hotkey from a bittensor wallet directory (see
        /// [`Identity::from_wallet`]).
        pub fn wallet(
            mut self,
            wallets_dir: impl AsRef<std::path::Path>,
            wallet: &str,
            hotkey: &str,
        ) -> Self {
            self.identity = Some(Identity::from_wallet(wallets_dir.as_ref(), wallet, hotkey));
            self
        }

        /// Signs with any [`Signer`] for `hotkey` (a remote wallet, an HSM, ...).
        pub fn signer(self, hotkey: impl Into<String>, signer: Arc<dyn Signer>) -> Self {
            self.identity(Identity::from_signer(hotkey, signer))
        }

        /// Signs through a callback (see [`Identity::from_callback`]).
        pub fn callback_signer<F>(self, hotkey: impl Into<String>, callback: F) -> Self
        where
            F: Fn(&[u8]) -> std::result::Result<Vec<u8>, String> + Send + Sync + 'static,
        {
            self.identity(Identity::from_callback(hotkey, callback))
        }

        /// Signs as `identity`.
        pub fn identity(mut self, identity: Identity) -> Self {
            self.identity = Some(Ok(identity));
            self
        }

        /// UDP socket buffers asked from the kernel (4 MiB by default; capped by
        /// `net.core.rmem_max` / `wmem_max`).
        pub fn socket_buffer_bytes(mut self, n: usize) -> Self {
            self.socket_buffer = n;
            self
        }

        /// The congestion controller of every connection: Cubic by default, as the
        /// reference; [`CongestionControl::Bbr`](crate::CongestionControl::Bbr) keeps its
        /// throughput on long lossy paths, at a cost to shallow bottlenecks and the flows
        /// sharing them (its documentation; README, Performance). Both ends choose for
        /// what they send: a validator's for its requests, a miner's for its answers.
        pub fn congestion(mut self, congestion: crate::CongestionControl) -> Self {
            self.config.transport.congestion = congestion;
            self
        }

        /// The largest UDP payload path MTU discovery tries towards other hosts (1,452
        /// bytes by default, an Ethernet path's; 1,200 to 65,527). Raise it where every
        /// path carries jumbo frames. Towards a peer on a loopback address packets are
        /// 64 KiB whatever this says (with Cubic and NewReno, not BBR).
        pub fn max_udp_payload(mut self, bytes: u16) -> Self {
            self.config.transport.max_udp_payload = bytes;
            self
        }

        /// Seeds the core's random choices (nonces, connection IDs, and a miner's
        /// certificate key) for reproducible runs. By default they come from the
        /// operating system.
        pub fn rng_seed(mut self, seed: [u8; 32]) -> Self {
            self.rng_seed = Some(seed);
            self
        }
    };
}

pub(crate) use shared_builder_setters;
