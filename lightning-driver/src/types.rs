//! Request, response and miner records of the async API (btlightning's names).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lightning_proto::message::DataMap;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{ConnectCause, LightningError, LocalCause, ProtocolCause, Result};

/// A miner's serving record: where to reach it and which hotkey it must prove.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuicAxonInfo {
    /// The miner's SS58 hotkey.
    pub hotkey: String,
    /// IP literal (v4 or v6; host names are not resolved, as in the reference).
    pub ip: String,
    /// UDP port.
    pub port: u16,
    /// Protocol tag from the chain (kept for parity; unused).
    pub protocol: u8,
}

impl QuicAxonInfo {
    /// A record; `protocol` is 4 on chain for IPv4 axons.
    pub fn new(hotkey: impl Into<String>, ip: impl Into<String>, port: u16, protocol: u8) -> Self {
        Self {
            hotkey: hotkey.into(),
            ip: ip.into(),
            port,
            protocol,
        }
    }

    /// A record for a socket address.
    pub fn from_addr(hotkey: impl Into<String>, addr: SocketAddr) -> Self {
        let protocol = if addr.is_ipv4() { 4 } else { 6 };
        Self::new(hotkey, addr.ip().to_string(), addr.port(), protocol)
    }

    /// The socket address; the IP must be a literal.
    pub fn addr(&self) -> Result<SocketAddr> {
        let ip: IpAddr = self
            .ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| LightningError::Connect(ConnectCause::InvalidAddress(self.ip.clone())))?;
        Ok(SocketAddr::new(ip, self.port))
    }
}

/// A query: the synapse (handler name) and its data map.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuicRequest {
    /// Handler name on the miner.
    pub synapse_type: String,
    /// Request data, kept as encoded MessagePack.
    pub data: DataMap,
}

impl QuicRequest {
    /// A request with a ready data map.
    pub fn new(synapse_type: impl Into<String>, data: DataMap) -> Self {
        Self {
            synapse_type: synapse_type.into(),
            data,
        }
    }

    /// A request whose data map is `value` serialized with field names (it must serialize
    /// to a map with string keys, like a struct).
    pub fn from_typed<T: Serialize + ?Sized>(
        synapse_type: impl Into<String>,
        value: &T,
    ) -> Result<Self> {
        let data = DataMap::from_typed(value)
            .map_err(|e| LightningError::Local(LocalCause::SerializeRequest(e)))?;
        Ok(Self::new(synapse_type, data))
    }
}

/// A miner's unary answer.
#[derive(Debug, Clone, PartialEq)]
pub struct QuicResponse {
    /// Whether the handler succeeded.
    pub success: bool,
    /// Response data (empty on failure).
    pub data: DataMap,
    /// From writing the request to reading the response.
    pub latency: Duration,
    /// The miner's error string when `success` is false.
    pub error: Option<String>,
}

impl QuicResponse {
    /// Latency in milliseconds, as btlightning reports it.
    pub fn latency_ms(&self) -> f64 {
        self.latency.as_secs_f64() * 1000.0
    }

    /// `Ok(self)` on success, [`LightningError::Remote`] with the miner's error otherwise.
    pub fn into_result(self) -> Result<Self> {
        if self.success {
            Ok(self)
        } else {
            Err(LightningError::Remote(
                self.error.unwrap_or_else(|| "unknown error".into()),
            ))
        }
    }

    /// Decodes the data map into `T` (by field names).
    pub fn deserialize_data<T: DeserializeOwned>(&self) -> Result<T> {
        self.data
            .deserialize()
            .map_err(|e| LightningError::Protocol(ProtocolCause::ResponseData(e)))
    }
}
