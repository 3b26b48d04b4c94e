//! The endpoint task: one hand-written poll loop per endpoint, shared by client and server.
//!
//! Each wake-up runs rounds of: take commands, receive a batch of datagrams (delivering
//! events and flushing transmits every few events), fire the timer, dispatch the
//! endpoint's events, flush transmits, re-arm the single timer. The work per
//! wake-up is bounded; if there is more, the task wakes itself so other tasks on the same
//! executor thread get a turn. The endpoint is owned by this task alone: no lock anywhere.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_lite::Stream;
use lightning_proto::endpoint::{Datagram, SansIo, Transmit};

use crate::metrics::IoCounters;
use crate::runtime::{Runtime, Timer};
use crate::socket::EndpointSocket;

/// Commands taken per round, so a flood of queries cannot starve the socket.
const COMMANDS_PER_ROUND: usize = 256;
/// Receive batches per round.
const RECV_BATCHES_PER_ROUND: usize = 8;
/// Rounds per wake-up before yielding to the executor.
const ROUNDS_PER_WAKE: usize = 16;
/// Events that call for output ([`Dispatched::due`]) delivered between flushes while a
/// receive batch is handled; the first one of each batch is flushed at once.
///
/// A receive batch often holds every request in flight (GRO hands over a whole burst at
/// once). Answering all of them before sending the first would make the two ends of a
/// conversation work in turns: the peer idles while this endpoint works through the
/// batch, then the other way round. Flushing every few events lets the peer start on the
/// first answers while the rest are processed. In the loopback benchmark (2 threads) this
/// took 1 KB at 32 in flight from ~118k to ~160k req/s and 256 B from ~146k to ~220k;
/// 4–12 all did well, 8 did best at 64–256 in flight, and flushing per datagram cost
/// more in system calls than it gained.
///
/// With fewer requests in flight than that, a batch rarely reaches 8 events, so the
/// answers used to leave together at its end and the two processes still took turns.
/// Flushing the first answer at once breaks that: two processes on loopback, 1 KB,
/// three alternating pairs: 71.2k against 40.4k req/s at c=8 (quinn-raw 82.7k in the same
/// series), 31.2k against 23.3k at c=4, 88.7k against 86.1k at c=32; flushing every 2
/// events did as well at c=8 but cost 6% at c=32.
const EVENTS_PER_FLUSH: usize = 8;

/// What one [`Role::dispatch_events`] call delivered.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Dispatched {
    /// Events delivered.
    pub events: usize,
    /// Of those, the ones after which output is due soon, because the peer waits for
    /// what they produce: requests on the miner (their answers), stream chunks on the
    /// validator (the flow-control credit the miner needs to go on). A validator's
    /// unary answers are not: what they produce is acknowledgements, and the queries
    /// they complete come back as commands (see [`Role::COMMANDS_AFTER_BATCH`]).
    pub due: usize,
}

/// What the loop needs from a role (client or server) wrapping a sans-IO endpoint.
pub(crate) trait Role: Send + 'static {
    /// Commands sent by application handles.
    type Command: Send + 'static;
    /// The sans-IO endpoint the loop drives, through its one surface.
    type Endpoint: SansIo;
    /// Whether the loop takes the commands queued meanwhile after each receive batch,
    /// before it flushes.
    ///
    /// For the validator: the queries a batch of answers completes are resubmitted by
    /// their tasks while the batch is handled, so taking them then lets the batch's
    /// acknowledgements ride in the new requests' packets instead of packets of their
    /// own, and the new requests leave a round earlier. Two processes on loopback,
    /// alternating pairs against flushing every 8 answers with commands taken once per
    /// round: 1 KB at c=32 91.7k against 87.8k req/s median (five pairs; validator 10.1
    /// against 10.7 µs and miner 7.1 against 7.6 µs CPU per request), 100 KB at c=16
    /// 3490 against 3393, 1 MB at c=4 level. Flushing after every batch only (stream
    /// chunks not counted as due) was as fast but held a streaming validator's credit
    /// and new queries behind 2 MB batches: the adversarial `abandoned_queries` saw 44%
    /// of its queries reach the miner in time instead of 98%.
    const COMMANDS_AFTER_BATCH: bool;

    /// The endpoint itself.
    fn endpoint(&mut self) -> &mut Self::Endpoint;
    /// The role's socket counters, which the loop keeps.
    fn io(&mut self) -> &mut IoCounters;
    /// A deadline of the role's own besides the endpoint's (a stop's grace period).
    fn own_deadline(&self) -> Option<Instant> {
        None
    }

    /// Applies one command.
    fn on_command(&mut self, now: Instant, command: Self::Command);
    /// Drains the endpoint's events and delivers them.
    fn dispatch_events(&mut self, now: Instant) -> Dispatched;
    /// Every handle is gone or a stop was asked for: begin closing.
    fn begin_shutdown(&mut self, now: Instant);
    /// Whether shutdown has finished (connections closed and drained, or given up).
    fn shutdown_complete(&mut self, now: Instant) -> bool;
    /// Whether a stop command arrived.
    fn stop_requested(&self) -> bool;
    /// Requests (client) or handler tasks (server) waiting for an answer.
    fn in_flight(&self) -> usize;
}

/// The endpoint task. Poll it to completion on any executor.
pub(crate) struct Driver<R: Runtime, Ro: Role> {
    // Fields drop in order: the socket closes before the role, whose drop is what `stop`
    // waits for, so a stopped server's port is free at once.
    socket: EndpointSocket<R>,
    timer: R::Timer,
    /// The endpoint's next deadline, as of the last round.
    deadline: Option<Instant>,
    /// Where the runtime timer is set; `None` once it has fired (or was never set).
    armed_at: Option<Instant>,
    commands: Pin<Box<async_channel::Receiver<Ro::Command>>>,
    commands_closed: bool,
    /// When this driver shares its port with others: the batches the group's reader
    /// sorted out for it (read while another driver is the reader).
    inbox: Option<Pin<Box<async_channel::Receiver<Vec<Datagram>>>>>,
    /// When this driver shares its port with others: what it needs to read the socket
    /// for all of them while it is the group's reader.
    router: Option<Router>,
    /// A batch taken from the inbox while registering for the next one (`arm_inbox`).
    stashed: Option<Vec<Datagram>>,
    shutting_down: bool,
    tx_buf: Vec<u8>,
    /// One receive batch, reused.
    rx: Vec<Datagram>,
    pending: Option<Transmit>,
    /// Set when a round took commands and put off its flush to let more arrive.
    flush_deferred: bool,
    /// Whether rounds put off their flush that way ([`Runtime::batch_by_yielding`]).
    batch_by_yielding: bool,

    role: Ro,
}

/// Datagrams the reading driver sorts before it asks whether another driver should read.
const READER_WINDOW: u32 = 2048;

/// The part of a group's driver that reads the socket when it is the group's reader: it
/// keeps its own datagrams and hands the others', by connection ID, to their drivers'
/// inboxes.
///
/// The reader is one of the drivers rather than a task of its own, so datagrams of its
/// own connections cost no hop between threads; the others' cost one channel send. The
/// role follows the load: when most of what the reader sorts belongs to one other driver
/// (a miner serving one busy validator), that driver becomes the reader, so the busiest
/// connections take no hop.
pub(crate) struct Router {
    routing: lightning_proto::endpoint::cid::CidRouting,
    /// This driver's index in the group.
    me: usize,
    /// Which driver of the group reads the socket now.
    reader: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Datagrams sorted for each driver in the current window.
    seen: Vec<u32>,
    /// Every driver's inbox, by index (this driver's own is never used).
    inboxes: Vec<async_channel::Sender<Vec<Datagram>>>,
    /// Datagrams gathered for each driver during one receive.
    batches: Vec<Vec<Datagram>>,
    /// A receive buffer swapped with the socket's, so sorting allocates nothing.
    spare: Vec<Datagram>,
}

impl Router {
    pub fn new(
        routing: lightning_proto::endpoint::cid::CidRouting,
        me: usize,
        reader: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        inboxes: Vec<async_channel::Sender<Vec<Datagram>>>,
    ) -> Self {
        let batches = inboxes.iter().map(|_| Vec::new()).collect();
        Self {
            routing,
            me,
            reader,
            seen: vec![0; inboxes.len()],
            inboxes,
            batches,
            spare: Vec::new(),
        }
    }

    /// Whether this driver reads the socket now.
    fn is_reader(&self) -> bool {
        self.reader.load(std::sync::atomic::Ordering::Acquire) == self.me
    }

    /// At the end of a window, hands the reading over to the driver that got at least
    /// three quarters of it, if that is another one. An empty batch in its inbox wakes
    /// it; its socket handle has seen every readiness event, so it finds what is
    /// waiting.
    fn maybe_hand_over(&mut self) {
        if self.seen.iter().sum::<u32>() < READER_WINDOW {
            return;
        }
        let (busiest, most) = self
            .seen
            .iter()
            .copied()
            .enumerate()
            .max_by_key(|&(_, n)| n)
            .unwrap_or((self.me, 0));
        self.seen.iter_mut().for_each(|n| *n = 0);
        if busiest != self.me && most >= READER_WINDOW / 4 * 3 {
            self.reader
                .store(busiest, std::sync::atomic::Ordering::Release);
            if let Some(inbox) = self.inboxes.get(busiest) {
                let _ = inbox.try_send(Vec::new());
            }
        }
    }

    /// Leaves in `rx` only this driver's datagrams (in their order) and sends the rest to
    /// their drivers.
    fn forward_others(&mut self, rx: &mut Vec<Datagram>) {
        std::mem::swap(rx, &mut self.spare);
        for d in self.spare.drain(..) {
            let driver = match self.routing.route(&d.payload) {
                i if i < self.batches.len() => i,
                _ => self.me,
            };
            self.seen[driver] += 1;
            if driver == self.me {
                rx.push(d);
            } else {
                self.batches[driver].push(d);
            }
        }
        for (batch, inbox) in self.batches.iter_mut().zip(&self.inboxes) {
            if batch.is_empty() {
                continue;
            }
            let full = std::mem::replace(batch, Vec::with_capacity(16));
            if let Err(e) = inbox.try_send(full) {
                // That driver is far behind (or gone): its datagrams are lost, as they
                // would be in a full socket buffer; QUIC sends them again.
                tracing::debug!(
                    datagrams = e.into_inner().len(),
                    "driver inbox full: dropped"
                );
            }
        }
    }
}

/// What a round asks of the poll loop.
enum RoundOutcome {
    /// Nothing happened: wait for a wake-up.
    Idle,
    /// Work was done: run another round.
    Busy,
    /// Commands arrived: yield once so that the tasks sending them can queue more, then
    /// flush them together.
    YieldForBatch,
}

impl<R: Runtime, Ro: Role> Driver<R, Ro> {
    pub fn new(
        runtime: &R,
        mut role: Ro,
        socket: EndpointSocket<R>,
        commands: async_channel::Receiver<Ro::Command>,
    ) -> Self {
        role.endpoint()
            .set_max_gso_segments(socket.max_gso_segments());
        // Parked far away until the first deadline arrives.
        let timer = runtime.timer(Instant::now() + std::time::Duration::from_secs(86_400));
        Self {
            role,
            socket,
            timer,
            deadline: None,
            armed_at: None,
            commands: Box::pin(commands),
            commands_closed: false,
            inbox: None,
            router: None,
            stashed: None,
            shutting_down: false,
            tx_buf: Vec::with_capacity(64 * 1024),
            rx: Vec::new(),
            pending: None,
            flush_deferred: false,
            batch_by_yielding: runtime.batch_by_yielding(),
        }
    }

    /// Takes the datagrams the group's reader sorts out for this driver (one driver of
    /// several behind one port; see [`Router`]).
    pub fn with_inbox(mut self, inbox: async_channel::Receiver<Vec<Datagram>>) -> Self {
        self.inbox = Some(Box::pin(inbox));
        self
    }

    /// Reads the socket for the group while this driver is its reader: datagrams whose
    /// connection belongs to another driver are handed to it (see [`Router`]).
    pub fn with_router(mut self, router: Router) -> Self {
        self.router = Some(router);
        self
    }

    /// Hands one batch of received datagrams to the endpoint, delivering events and
    /// flushing every [`EVENTS_PER_FLUSH`] events that call for output; then, for roles
    /// that take them ([`Role::COMMANDS_AFTER_BATCH`]), the commands queued meanwhile,
    /// and a flush.
    fn deliver(&mut self, cx: &mut Context<'_>, now: Instant, rx: &mut Vec<Datagram>) {
        let had_datagrams = !rx.is_empty();
        let mut since_flush = 0;
        // The first due event of a batch is flushed at once (see `EVENTS_PER_FLUSH`).
        let mut flushed_once = false;
        for d in rx.drain(..) {
            self.role.endpoint().handle_datagram(now, d);
            since_flush += self.role.dispatch_events(now).due;
            if since_flush >= EVENTS_PER_FLUSH || (!flushed_once && since_flush > 0) {
                flushed_once = true;
                since_flush = 0;
                self.flush(cx, now);
            }
        }
        if Ro::COMMANDS_AFTER_BATCH && had_datagrams {
            self.take_queued_commands(now);
            self.flush(cx, now);
        }
    }

    /// Applies the commands already queued, without registering for more (an empty
    /// channel's `poll_next` would register a listener each time; the round's first step
    /// does that once).
    fn take_queued_commands(&mut self, now: Instant) {
        if self.commands_closed {
            return;
        }
        for _ in 0..COMMANDS_PER_ROUND {
            let Ok(cmd) = self.commands.try_recv() else {
                break;
            };
            self.role.on_command(now, cmd);
        }
    }

    /// Receives up to `RECV_BATCHES_PER_ROUND` batches from the inbox (datagrams another
    /// driver read for this one) and as many from the socket, when this driver reads it
    /// (alone, or as its group's reader); whether any datagram came.
    fn receive(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut busy = false;
        for _ in 0..RECV_BATCHES_PER_ROUND {
            let next = self
                .stashed
                .take()
                .or_else(|| self.inbox.as_ref()?.try_recv().ok());
            let Some(mut rx) = next else {
                break;
            };
            // An empty batch is a wake-up: this driver has just become the reader.
            busy = true;
            let bytes = rx.iter().map(|d| d.payload.len()).sum();
            self.role.io().received(rx.len(), bytes);
            self.deliver(cx, now, &mut rx);
        }
        for _ in 0..RECV_BATCHES_PER_ROUND {
            if self.router.as_ref().is_some_and(|r| !r.is_reader()) {
                break;
            }
            let mut rx = std::mem::take(&mut self.rx);
            match self.socket.poll_recv(cx, |d| rx.push(d)) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    tracing::warn!("UDP receive failed: {e}");
                    self.rx = rx;
                    break;
                }
                Poll::Pending => {
                    self.rx = rx;
                    break;
                }
            }
            // Busy whenever anything came, even if all of it was another driver's: the
            // socket has not said `WouldBlock` yet, so no wake-up is registered for it.
            busy |= !rx.is_empty();
            if let Some(router) = &mut self.router {
                router.forward_others(&mut rx);
                router.maybe_hand_over();
            }
            let bytes = rx.iter().map(|d| d.payload.len()).sum();
            self.role.io().received(rx.len(), bytes);
            self.deliver(cx, now, &mut rx);
            // The socket's batch buffer is kept for the next receive.
            self.rx = rx;
        }
        busy
    }

    /// One round.
    fn round(&mut self, cx: &mut Context<'_>) -> RoundOutcome {
        let mut busy = false;
        let mut took_commands = false;
        let others_in_flight = self.role.in_flight() > 0;
        let now = Instant::now();

        // 1. Commands from the application.
        if !self.commands_closed {
            for _ in 0..COMMANDS_PER_ROUND {
                match self.commands.as_mut().poll_next(cx) {
                    Poll::Ready(Some(cmd)) => {
                        busy = true;
                        took_commands = true;
                        self.role.on_command(now, cmd);
                    }
                    Poll::Ready(None) => {
                        self.commands_closed = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if !self.shutting_down && (self.commands_closed || self.role.stop_requested()) {
            self.shutting_down = true;
            self.role.begin_shutdown(now);
            busy = true;
        }

        // 2. Datagrams, with events delivered and output flushed as they come.
        busy |= self.receive(cx, now);

        // 3. The deadline.
        if self.deadline.is_some_and(|at| at <= now) {
            self.deadline = None;
            self.role.endpoint().handle_timeout(now);
            busy = true;
        }

        // 4. Events to the application (handlers may answer inline, producing output).
        busy |= self.role.dispatch_events(now).events > 0;

        // Many tasks querying at once each wake this task with one command; yielding once
        // first lets the others queue theirs, so they leave together in one GSO batch.
        // Only when other requests are in flight (a lone query leaves at once), once per
        // burst (the next round flushes), and on runtimes where a yield is cheap
        // (`Runtime::batch_by_yielding`: on tokio it wakes another worker thread, which
        // costs more than the batch saves).
        if self.batch_by_yielding
            && took_commands
            && others_in_flight
            && !self.flush_deferred
            && !self.shutting_down
        {
            self.flush_deferred = true;
            return RoundOutcome::YieldForBatch;
        }
        self.flush_deferred = false;

        // 5. Datagrams out, until the socket is full.
        busy |= self.flush(cx, now);

        // 6. Re-arm the one timer.
        // After the last `poll_transmit` (the drive contract on
        // `lightning_proto::endpoint::SansIo`).
        self.deadline = match (
            self.role.endpoint().poll_timeout(),
            self.role.own_deadline(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        busy |= self.arm_timer(cx, now);
        if !busy {
            busy = self.arm_inbox(cx);
        }
        if busy {
            RoundOutcome::Busy
        } else {
            RoundOutcome::Idle
        }
    }

    /// Before the task sleeps: registers for the inbox's next batch (or takes one that
    /// arrived meanwhile, returning `true`). Rounds take batches with `try_recv`, which
    /// costs no registration; an empty channel's `poll_next` registers a listener each
    /// time, which every busy round would pay for nothing.
    fn arm_inbox(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(inbox) = self.inbox.as_mut() else {
            return false;
        };
        match inbox.as_mut().poll_next(cx) {
            Poll::Ready(Some(batch)) => {
                self.stashed = Some(batch);
                true
            }
            Poll::Ready(None) | Poll::Pending => false,
        }
    }

    /// Makes sure the runtime timer wakes the task by `self.deadline`; returns whether
    /// the deadline is already due (another round should run).
    ///
    /// QUIC's deadline moves with almost every packet, mostly later (idle and loss timers
    /// restart). Moving a runtime timer is not free (on async-io every move wakes the
    /// reactor thread through its eventfd), so a timer set earlier than the deadline is
    /// left to fire: that costs one spare wake-up, after which it is moved to the deadline.
    /// It moves at once only when the deadline comes earlier or it has already fired.
    fn arm_timer(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let Some(at) = self.deadline else {
            return false;
        };
        if at <= now {
            return true;
        }
        if self.armed_at.is_none_or(|armed| at < armed || armed <= now) {
            self.timer.reset(at);
            self.armed_at = Some(at);
        }
        if self.timer.poll_elapsed(cx).is_ready() {
            // Passed by the runtime's clock since `now` was read: go round again.
            self.armed_at = None;
            return true;
        }
        false
    }

    fn flush(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut sent = false;
        loop {
            let transmit = match self.pending.take() {
                Some(t) => t,
                None => match self.role.endpoint().poll_transmit(now, &mut self.tx_buf) {
                    Some(t) => t,
                    None => return sent,
                },
            };
            match self.socket.poll_send(cx, &transmit, &self.tx_buf) {
                Poll::Ready(Ok(())) => {
                    sent = true;
                    self.role
                        .io()
                        .sent(transmit.size.min(self.tx_buf.len()), transmit.segment_size);
                }
                Poll::Ready(Err(e)) => {
                    self.role.io().send_errors += 1;
                    // Treated as a lost packet; QUIC retransmits.
                    tracing::debug!("UDP send to {} failed: {e}", transmit.destination);
                    sent = true;
                }
                Poll::Pending => {
                    self.pending = Some(transmit);
                    return sent;
                }
            }
        }
    }
}

impl<R: Runtime, Ro: Role> Future for Driver<R, Ro> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..ROUNDS_PER_WAKE {
            let outcome = this.round(cx);
            if this.shutting_down && this.pending.is_none() {
                let now = Instant::now();
                if this.role.shutdown_complete(now) {
                    return Poll::Ready(());
                }
            }
            match outcome {
                RoundOutcome::Idle => return Poll::Pending,
                RoundOutcome::Busy => {}
                RoundOutcome::YieldForBatch => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
        // Still busy: let the executor run other tasks, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

// `Driver` holds no self-references.
impl<R: Runtime, Ro: Role> Unpin for Driver<R, Ro> {}
