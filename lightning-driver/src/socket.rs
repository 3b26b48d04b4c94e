//! The UDP side of an endpoint: quinn-udp batches (GRO/GSO/ECN) over a runtime socket.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket};
use std::task::{Context, Poll};

use lightning_proto::endpoint::{Datagram, EcnCodepoint, Transmit};
use quinn_udp::{RecvMeta, UdpSocketState};

use crate::error::{LightningError, LocalCause};
use crate::recv_slots::RecvSlots;
use crate::runtime::{Direction, Runtime, UdpIo};

/// Bytes per receive slot: the largest GRO super-packet the kernel hands over at once.
const SLOT: usize = 64 * 1024;

/// Datagrams (or GRO super-packets, up to 64 KiB each) asked for per receive call. Fewer
/// than quinn-udp's 32: with 64 KiB datagrams (loopback) a batch of 32 put 2 MiB through
/// the batch buffer and 2 MiB more through the copies before quinn saw any of it, which
/// left the CPU cache behind; batches of 8 gave 5% more 1 MB requests/s at c=4 (660
/// against 629, two processes). Small datagrams are still batched 44 to a slot by GRO.
const RECV_BATCH: usize = 8;

/// Whether a receive call that filled fewer than [`RECV_BATCH`] messages left the socket
/// queue empty. True where quinn-udp receives with `recvmmsg`, which stops short only
/// when the queue runs dry; elsewhere a call may return one datagram of many.
const DRAINED_BY_SHORT_BATCH: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Socket buffer size asked for by default. Kernel defaults (~208 KiB) drop packets as
/// soon as a 10 KB+ burst arrives faster than the endpoint task reads.
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// A bound socket plus the state quinn-udp keeps about it.
pub(crate) struct EndpointSocket<R: Runtime> {
    io: R::Socket,
    state: UdpSocketState,
    recv_buf: Box<[u8]>,
    /// Recycled buffers the large datagrams are copied into.
    slots: RecvSlots,
    metas: [RecvMeta; RECV_BATCH],
    /// Bound to an IPv6 address: IPv4 peers are reached through IPv4-mapped addresses,
    /// which never leave this module (everything above sees plain IPv4).
    v6: bool,
}

/// Binds a UDP socket; the IPv6 wildcard (`[::]`) is made dual-stack (IPv6 and IPv4 peers)
/// whatever the system's `bindv6only` default.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            let socket = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            socket.set_only_v6(false)?;
            socket.bind(&addr.into())?;
            Ok(socket.into())
        }
        _ => UdpSocket::bind(addr),
    }
}

/// An address as an IPv6 socket sends to it (IPv4 becomes IPv4-mapped).
fn to_v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        v6 => v6,
    }
}

/// An address as the layers above know it (IPv4-mapped becomes IPv4).
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Buffer sizes the kernel actually granted (it may cap what we ask for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketBuffers {
    /// Receive buffer in bytes.
    pub recv: usize,
    /// Send buffer in bytes.
    pub send: usize,
}

impl<R: Runtime> EndpointSocket<R> {
    /// One handle of [`bind_endpoints`](Self::bind_endpoints), for an endpoint that is
    /// alone on its socket.
    pub fn bind_endpoint(
        runtime: &R,
        addr: SocketAddr,
        buffer_bytes: usize,
    ) -> Result<(Self, SocketBuffers, SocketAddr), LightningError> {
        let (mut sockets, buffers, local_addr) =
            Self::bind_endpoints(runtime, addr, buffer_bytes, 1)?;
        let socket = sockets
            .pop()
            .ok_or_else(|| LightningError::Local(LocalCause::Socket(no_socket().into())))?;
        Ok((socket, buffers, local_addr))
    }

    /// [`bind_shared`](Self::bind_shared) for an endpoint being built (`handles`
    /// handles, at least one), with the address it got: the failures as the builders
    /// report them.
    pub fn bind_endpoints(
        runtime: &R,
        addr: SocketAddr,
        buffer_bytes: usize,
        handles: usize,
    ) -> Result<(Vec<Self>, SocketBuffers, SocketAddr), LightningError> {
        let (sockets, buffers) =
            Self::bind_shared(runtime, addr, buffer_bytes, handles).map_err(|e| {
                LightningError::Local(LocalCause::Bind {
                    addr,
                    error: e.into(),
                })
            })?;
        let local_addr = sockets
            .first()
            .ok_or_else(no_socket)
            .and_then(|s| s.local_addr())
            .map_err(|e| LightningError::Local(LocalCause::Socket(e.into())))?;
        Ok((sockets, buffers, local_addr))
    }

    /// Binds `addr`, enlarges the buffers to `buffer_bytes`, and returns `handles` handles
    /// (at least one) on the one socket: duplicate descriptors, each registered with the
    /// runtime on its own so that several tasks can each wait for its readiness. Each
    /// sends, and whichever driver reads the socket reads through its own.
    pub fn bind_shared(
        runtime: &R,
        addr: SocketAddr,
        buffer_bytes: usize,
        handles: usize,
    ) -> io::Result<(Vec<Self>, SocketBuffers)> {
        let socket = bind_udp(addr)?;
        let v6 = socket.local_addr()?.is_ipv6();
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        // The kernel caps these at net.core.{r,w}mem_max; a refusal is not fatal.
        if let Err(e) = state.set_recv_buffer_size((&socket).into(), buffer_bytes) {
            tracing::debug!("could not set the UDP receive buffer: {e}");
        }
        if let Err(e) = state.set_send_buffer_size((&socket).into(), buffer_bytes) {
            tracing::debug!("could not set the UDP send buffer: {e}");
        }
        let buffers = SocketBuffers {
            recv: state.recv_buffer_size((&socket).into()).unwrap_or(0),
            send: state.send_buffer_size((&socket).into()).unwrap_or(0),
        };
        if buffers.recv < buffer_bytes {
            tracing::info!(
                granted = buffers.recv,
                asked = buffer_bytes,
                "UDP receive buffer is smaller than asked (raise net.core.rmem_max)"
            );
        }
        let handles = handles.max(1);
        let mut original = Some(socket);
        let mut out = Vec::with_capacity(handles);
        for i in 0..handles {
            let handle = match original.take() {
                Some(socket) if i + 1 == handles => socket,
                Some(socket) => {
                    let clone = socket.try_clone()?;
                    original = Some(socket);
                    clone
                }
                None => return Err(io::Error::other("socket handle lost")),
            };
            let state = UdpSocketState::new((&handle).into())?;
            out.push(Self {
                io: runtime.wrap_udp(handle)?,
                state,
                // Any handle may receive: in a group, the reading driver changes.
                recv_buf: vec![0u8; SLOT * RECV_BATCH].into_boxed_slice(),
                slots: RecvSlots::default(),
                metas: [RecvMeta::default(); RECV_BATCH],
                v6,
            });
        }
        Ok((out, buffers))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Receives one batch. `Ready(Ok(n))` with `n > 0` datagrams passed to `sink`;
    /// `Pending` when nothing is readable (the waker is registered).
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        mut sink: impl FnMut(Datagram),
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.io.poll_ready(Direction::Read, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            let state = &self.state;
            let metas = &mut self.metas;
            let mut slices: [IoSliceMut<'_>; RECV_BATCH] = {
                let mut chunks = self.recv_buf.chunks_mut(SLOT);
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()))
            };
            let mut short = 0;
            let result = self.io.try_io(Direction::Read, |sock| {
                let count = state.recv(sock, &mut slices, metas)?;
                if DRAINED_BY_SHORT_BATCH && count < RECV_BATCH {
                    // The queue was empty when the kernel filled this batch: reporting
                    // WouldBlock clears the runtime's readiness now instead of after one
                    // more receive call that would only say so (one syscall per
                    // wake-up). A datagram arriving after this read raises a new edge.
                    short = count;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(count)
            });
            let result = match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
                other => other,
            };
            match result {
                Ok(count) => {
                    let slots = &mut self.slots;
                    let mut delivered = 0;
                    for (meta, slot) in self.metas[..count].iter().zip(self.recv_buf.chunks(SLOT)) {
                        let len = meta.len.min(slot.len());
                        let stride = meta.stride.max(1);
                        let ecn = meta.ecn.and_then(|e| EcnCodepoint::from_bits(e as u8));
                        for datagram in slot[..len].chunks(stride) {
                            delivered += 1;
                            sink(Datagram {
                                remote: canonical(meta.addr),
                                local_ip: meta.dst_ip.map(|ip| ip.to_canonical()),
                                ecn,
                                payload: slots.copy(datagram),
                            });
                        }
                    }
                    return Poll::Ready(Ok(delivered));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // ICMP errors surface here on some platforms; they concern one peer only.
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends one transmit. `Pending` means the socket is full: keep the transmit and retry
    /// when woken. Datagrams the kernel refuses for other reasons are dropped like losses.
    pub fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        transmit: &Transmit,
        contents: &[u8],
    ) -> Poll<io::Result<()>> {
        let (destination, src_ip) = if self.v6 {
            let src = transmit.src_ip.map(|ip| match ip {
                IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                v6 => v6,
            });
            (to_v6(transmit.destination), src)
        } else {
            (transmit.destination, transmit.src_ip)
        };
        let udp = quinn_udp::Transmit {
            destination,
            ecn: transmit
                .ecn
                .and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents: &contents[..transmit.size.min(contents.len())],
            segment_size: transmit.segment_size,
            src_ip,
        };
        loop {
            match self.io.poll_ready(Direction::Write, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            let state = &self.state;
            match self
                .io
                .try_io(Direction::Write, |sock| state.send(sock, &udp))
            {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// `bind_shared` returned no handle (it returns at least one).
fn no_socket() -> io::Error {
    io::Error::other("no socket bound")
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}
