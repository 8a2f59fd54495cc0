//! Settings of a shared-memory endpoint.

use std::time::Duration;

use ipc_core::AuthPolicy;

use crate::layout::DEFAULT_RING_CAPACITY;

/// Settings of a shared-memory listener or connection.
///
/// ```
/// use std::time::Duration;
/// use ipc_shm::ShmOptions;
///
/// let opts = ShmOptions::new()
///     .ring_capacity(1 << 20)
///     .spin(Duration::from_micros(100))
///     .async_spin(Duration::from_micros(20));
/// assert_eq!(opts.get_ring_capacity(), 1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct ShmOptions {
    pub(crate) ring_capacity: usize,
    pub(crate) spin: Duration,
    pub(crate) async_spin: Duration,
    pub(crate) liveness: Duration,
    pub(crate) max_message: usize,
    pub(crate) auth: AuthPolicy,
    pub(crate) socket_mode: u32,
}

/// Default spin before a blocking call sleeps: generous, because waking a
/// sleeping peer costs tens of microseconds on a virtual machine, and a
/// budget shorter than one wake-up keeps both sides sleeping.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Default interval at which a sleeper checks that the peer process lives.
pub const DEFAULT_LIVENESS_CHECK: Duration = Duration::from_millis(20);

impl Default for ShmOptions {
    fn default() -> Self {
        ShmOptions {
            ring_capacity: DEFAULT_RING_CAPACITY,
            spin: DEFAULT_SPIN,
            async_spin: Duration::ZERO,
            liveness: DEFAULT_LIVENESS_CHECK,
            max_message: ipc_core::codec::DEFAULT_MAX_FRAME_LEN,
            auth: AuthPolicy::default(),
            socket_mode: 0o600,
        }
    }
}

impl ShmOptions {
    /// The defaults: 8 MiB rings, 50 us spin for blocking calls, no spin in
    /// async calls, same-user peers only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes per ring (each direction), a power of two between
    /// [`crate::layout::MIN_RING_CAPACITY`] and
    /// [`crate::layout::MAX_RING_CAPACITY`]; default
    /// [`crate::layout::DEFAULT_RING_CAPACITY`], 8 MiB. Set by the server;
    /// the client uses what the server chose. A connection takes the pages
    /// of its two rings as they are written: one of small messages holds a
    /// few pages, one that streams up to twice this (on Windows the whole
    /// region counts against the commit limit from the start). Bulk streams
    /// want rings well above a core's L2 cache.
    pub fn ring_capacity(mut self, bytes: usize) -> Self {
        self.ring_capacity = bytes;
        self
    }

    /// How long a blocking call spins before it sleeps on the doorbell
    /// (default 50 µs). A call that moves a message in pieces starts its
    /// spin again at each piece, so only a stall of a whole spin between
    /// two pieces puts it to sleep. With a non-zero spin, a receive also
    /// spins on, for up to 10 ms, while the peer copies in a message of
    /// 256 KiB or more that it has announced (the announcement wakes a
    /// receiver asleep).
    ///
    /// On Linux a blocking connection that spins (a non-zero spin here)
    /// makes a process-wide memory barrier each time it goes to sleep
    /// (`membarrier(2)`, a system call that interrupts the CPUs running
    /// processes that use it), so that its peer can wake it without a CPU
    /// fence on every message it sends: 64 B round trips are 3-4% shorter,
    /// streams of small messages 40-60% faster. With a spin of zero it
    /// keeps the fences.
    pub fn spin(mut self, d: Duration) -> Self {
        self.spin = d;
        self
    }

    /// How long an async read or write spins before it waits on the
    /// doorbell. Zero (the default) never spins; a few microseconds cut the
    /// latency of request/response traffic to that of the blocking API, at
    /// the cost of a busy runtime thread. The spin holds the thread for at
    /// most 2 µs at a time: in between, the runtime runs the other tasks
    /// ready on it (such as the one that writes a reply) and polls the
    /// spinning task again. An async side parks too often for the
    /// process-wide barrier of [`Self::spin`]: it keeps its fences.
    pub fn async_spin(mut self, d: Duration) -> Self {
        self.async_spin = d;
        self
    }

    /// How often a sleeping blocking call checks that the peer lives (a
    /// killed peer is reported within about this time).
    pub fn liveness_check(mut self, d: Duration) -> Self {
        self.liveness = d.max(Duration::from_millis(1));
        self
    }

    /// Largest message of the message API, in either direction.
    pub fn max_message_len(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Who may connect (checked on the socket's peer credentials before
    /// the region is handed over). Default: the same user.
    pub fn auth(mut self, policy: AuthPolicy) -> Self {
        self.auth = policy;
        self
    }

    /// File mode of the bootstrap socket (default `0o600`, owner only).
    /// Opening it lets other users reach the auth policy, which still
    /// decides who gets a region. Unix only: on Windows the named pipe is
    /// owner-only (its security descriptor allows the user and `SYSTEM`).
    pub fn socket_mode(mut self, mode: u32) -> Self {
        self.socket_mode = mode;
        self
    }

    /// Bytes per ring.
    pub fn get_ring_capacity(&self) -> usize {
        self.ring_capacity
    }
}
