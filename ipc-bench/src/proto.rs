//! The benchmark's wire protocol and the workloads every mechanism runs.
//!
//! A mechanism only has to move messages: [`MsgSync`] (blocking) or
//! [`MsgAsync`] (async) with `send` and `recv` of one message. Everything
//! else — the echo and sink server loops, the latency, throughput and paced
//! client loops — is written once here, so each mechanism is measured by the
//! same code doing the same number of round trips.
//!
//! On the connection the client sends a [`Cmd`] (itself one 16-byte message),
//! then the messages the command announces:
//!
//! - `Echo { size, count }`: `count` times, the client sends `size` bytes and
//!   the server sends them back.
//! - `Sink { size, count }`: the client sends `count` messages of `size` bytes
//!   back to back; the server replies with one 8-byte acknowledgement.
//! - `End`: the server closes the connection.

use std::io;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Bytes of one command message.
pub const CMD_LEN: usize = 16;
/// Bytes of the sink acknowledgement.
pub const ACK_LEN: usize = 8;
/// Round trips per `Echo` command: a long run is split so a time cap can stop it.
const ECHO_BATCH: u64 = 1000;
/// Bytes a `Sink` command announces at most, so a throughput run can stop on time.
const SINK_BATCH_BYTES: u64 = 4 << 20;
/// Messages a `Sink` command announces at most.
const SINK_BATCH_MSGS: u64 = 8192;
/// The largest message a test uses; buffers are this large.
pub const MAX_MSG: usize = 1 << 20;

/// One command from client to server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// Close the connection.
    End,
    /// Echo `count` messages of `size` bytes.
    Echo { size: u32, count: u64 },
    /// Receive `count` messages of `size` bytes, then acknowledge.
    Sink { size: u32, count: u64 },
}

impl Cmd {
    /// The command as its 16-byte message.
    pub fn encode(self) -> [u8; CMD_LEN] {
        let (op, size, count) = match self {
            Cmd::End => (0u32, 0u32, 0u64),
            Cmd::Echo { size, count } => (1, size, count),
            Cmd::Sink { size, count } => (2, size, count),
        };
        let mut out = [0u8; CMD_LEN];
        out[..4].copy_from_slice(&op.to_le_bytes());
        out[4..8].copy_from_slice(&size.to_le_bytes());
        out[8..].copy_from_slice(&count.to_le_bytes());
        out
    }

    /// Parses a command message, refusing unknown operations and sizes over [`MAX_MSG`].
    pub fn decode(b: &[u8; CMD_LEN]) -> io::Result<Cmd> {
        let op = u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        let size = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
        let count = u64::from_le_bytes(b[8..].try_into().expect("8 bytes"));
        if size as usize > MAX_MSG {
            return Err(bad(format!(
                "command asks for {size}-byte messages; the largest is {MAX_MSG}"
            )));
        }
        match op {
            0 => Ok(Cmd::End),
            1 => Ok(Cmd::Echo { size, count }),
            2 => Ok(Cmd::Sink { size, count }),
            _ => Err(bad(format!(
                "unknown command {op}: client and server are different ipc-bench builds"
            ))),
        }
    }
}

/// An `InvalidData` error with a message.
pub fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A blocking message channel.
pub trait MsgSync {
    /// Sends one message.
    fn send(&mut self, msg: &[u8]) -> io::Result<()>;
    /// Receives one message of exactly `buf.len()` bytes into `buf`.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()>;
    /// Receives `count` messages of `size` bytes whose content is not needed.
    /// Byte streams override this to read in large chunks, as a real
    /// receiver parsing a stream would.
    fn drain(&mut self, count: u64, size: usize, scratch: &mut [u8]) -> io::Result<()> {
        for _ in 0..count {
            self.recv(&mut scratch[..size])?;
        }
        Ok(())
    }
}

/// An async message channel.
#[allow(async_fn_in_trait)]
pub trait MsgAsync {
    /// Sends one message.
    async fn send(&mut self, msg: &[u8]) -> io::Result<()>;
    /// Receives one message of exactly `buf.len()` bytes into `buf`.
    async fn recv(&mut self, buf: &mut [u8]) -> io::Result<()>;
    /// See [`MsgSync::drain`].
    async fn drain(&mut self, count: u64, size: usize, scratch: &mut [u8]) -> io::Result<()> {
        for _ in 0..count {
            self.recv(&mut scratch[..size]).await?;
        }
        Ok(())
    }
}

fn is_eof(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Serves commands on one connection until `End` or the peer hangs up.
pub fn serve_sync<S: MsgSync>(s: &mut S) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_MSG];
    loop {
        let mut cmd = [0u8; CMD_LEN];
        match s.recv(&mut cmd) {
            Ok(()) => {}
            Err(e) if is_eof(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        match Cmd::decode(&cmd)? {
            Cmd::End => return Ok(()),
            Cmd::Echo { size, count } => {
                let msg = &mut buf[..size as usize];
                for _ in 0..count {
                    s.recv(msg)?;
                    s.send(msg)?;
                }
            }
            Cmd::Sink { size, count } => {
                s.drain(count, size as usize, &mut buf)?;
                s.send(&count.to_le_bytes())?;
            }
        }
    }
}

/// [`serve_sync`] for an async channel.
pub async fn serve_async<S: MsgAsync>(s: &mut S) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_MSG];
    loop {
        let mut cmd = [0u8; CMD_LEN];
        match s.recv(&mut cmd).await {
            Ok(()) => {}
            Err(e) if is_eof(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
        match Cmd::decode(&cmd)? {
            Cmd::End => return Ok(()),
            Cmd::Echo { size, count } => {
                let msg = &mut buf[..size as usize];
                for _ in 0..count {
                    s.recv(msg).await?;
                    s.send(msg).await?;
                }
            }
            Cmd::Sink { size, count } => {
                s.drain(count, size as usize, &mut buf).await?;
                s.send(&count.to_le_bytes()).await?;
            }
        }
    }
}

/// What a latency or paced run is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct LatencySpec {
    /// Message size in bytes.
    pub size: usize,
    /// Round trips recorded.
    pub count: u64,
    /// Round trips run first and not recorded.
    pub warmup: u64,
    /// Stop early (with fewer samples) once this much time has passed.
    pub cap: Duration,
    /// Messages per second, or `None` for back to back.
    pub rate: Option<f64>,
}

/// The result of a throughput run.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    /// Messages the server acknowledged.
    pub messages: u64,
    /// From the first byte sent to the last acknowledgement.
    pub elapsed: Duration,
}

/// A histogram of nanoseconds from 1 ns to 100 s at 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + 7) as u8).collect()
}

/// Waits until `deadline`: sleeps while it is far, spins the last stretch so
/// the next message leaves on time (the wait is outside the measured span).
pub fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

struct Schedule {
    start: Instant,
    interval: Option<Duration>,
    next: u64,
}

impl Schedule {
    fn new(rate: Option<f64>) -> Self {
        Schedule {
            start: Instant::now(),
            interval: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            next: 0,
        }
    }
    /// Waits for the next send slot; a late sender goes at once, without catching up in a burst.
    fn wait(&mut self) {
        if let Some(iv) = self.interval {
            let due = self.start + iv * self.next as u32;
            wait_until(due);
            let now = Instant::now();
            self.next += 1;
            if now > due + iv {
                // Behind schedule: restart the clock rather than send back to back.
                self.start = now;
                self.next = 1;
            }
        }
    }
}

fn check_echo(sent: &[u8], got: &[u8]) -> io::Result<()> {
    // Compare both ends only: a full compare would add a memcmp per round trip.
    let n = sent.len();
    if n > 0 && (sent[0] != got[0] || sent[n - 1] != got[n - 1]) {
        return Err(bad("the echoed message differs from the one sent"));
    }
    Ok(())
}

/// Round trips on a blocking channel; returns the recorded histogram.
pub fn latency_sync<S: MsgSync>(s: &mut S, spec: LatencySpec) -> io::Result<Histogram<u64>> {
    let msg = payload(spec.size);
    let mut back = vec![0u8; spec.size];
    let mut hist = new_histogram();
    let total = spec.warmup + spec.count;
    let started = Instant::now();
    let mut sched = Schedule::new(spec.rate);
    let mut done = 0;
    while done < total {
        if done > spec.warmup && started.elapsed() > spec.cap {
            break;
        }
        let batch = ECHO_BATCH.min(total - done);
        s.send(
            &Cmd::Echo {
                size: spec.size as u32,
                count: batch,
            }
            .encode(),
        )?;
        for _ in 0..batch {
            sched.wait();
            let t0 = Instant::now();
            s.send(&msg)?;
            s.recv(&mut back)?;
            let ns = t0.elapsed().as_nanos() as u64;
            if done >= spec.warmup {
                hist.saturating_record(ns.max(1));
            }
            done += 1;
        }
        check_echo(&msg, &back)?;
    }
    Ok(hist)
}

/// [`latency_sync`] for an async channel.
pub async fn latency_async<S: MsgAsync>(
    s: &mut S,
    spec: LatencySpec,
) -> io::Result<Histogram<u64>> {
    let msg = payload(spec.size);
    let mut back = vec![0u8; spec.size];
    let mut hist = new_histogram();
    let total = spec.warmup + spec.count;
    let started = Instant::now();
    let mut sched = Schedule::new(spec.rate);
    let mut done = 0;
    while done < total {
        if done > spec.warmup && started.elapsed() > spec.cap {
            break;
        }
        let batch = ECHO_BATCH.min(total - done);
        s.send(
            &Cmd::Echo {
                size: spec.size as u32,
                count: batch,
            }
            .encode(),
        )
        .await?;
        for _ in 0..batch {
            sched.wait();
            let t0 = Instant::now();
            s.send(&msg).await?;
            s.recv(&mut back).await?;
            let ns = t0.elapsed().as_nanos() as u64;
            if done >= spec.warmup {
                hist.saturating_record(ns.max(1));
            }
            done += 1;
        }
        check_echo(&msg, &back)?;
    }
    Ok(hist)
}

fn sink_batch(size: usize) -> u64 {
    (SINK_BATCH_BYTES / size.max(1) as u64).clamp(1, SINK_BATCH_MSGS)
}

/// A one-way stream of `size`-byte messages for about `duration`.
pub fn throughput_sync<S: MsgSync>(
    s: &mut S,
    size: usize,
    duration: Duration,
) -> io::Result<Stream> {
    let msg = payload(size);
    let batch = sink_batch(size);
    let mut ack = [0u8; ACK_LEN];
    let mut messages = 0;
    let start = Instant::now();
    while start.elapsed() < duration {
        s.send(
            &Cmd::Sink {
                size: size as u32,
                count: batch,
            }
            .encode(),
        )?;
        for _ in 0..batch {
            s.send(&msg)?;
        }
        s.recv(&mut ack)?;
        messages += u64::from_le_bytes(ack);
    }
    Ok(Stream {
        messages,
        elapsed: start.elapsed(),
    })
}

/// [`throughput_sync`] for an async channel.
pub async fn throughput_async<S: MsgAsync>(
    s: &mut S,
    size: usize,
    duration: Duration,
) -> io::Result<Stream> {
    let msg = payload(size);
    let batch = sink_batch(size);
    let mut ack = [0u8; ACK_LEN];
    let mut messages = 0;
    let start = Instant::now();
    while start.elapsed() < duration {
        s.send(
            &Cmd::Sink {
                size: size as u32,
                count: batch,
            }
            .encode(),
        )
        .await?;
        for _ in 0..batch {
            s.send(&msg).await?;
        }
        s.recv(&mut ack).await?;
        messages += u64::from_le_bytes(ack);
    }
    Ok(Stream {
        messages,
        elapsed: start.elapsed(),
    })
}

/// Tells the server this connection is done.
pub fn end_sync<S: MsgSync>(s: &mut S) -> io::Result<()> {
    s.send(&Cmd::End.encode())
}

/// [`end_sync`] for an async channel.
pub async fn end_async<S: MsgAsync>(s: &mut S) -> io::Result<()> {
    s.send(&Cmd::End.encode()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_bad_ones_are_refused() {
        for c in [
            Cmd::End,
            Cmd::Echo { size: 64, count: 9 },
            Cmd::Sink {
                size: 1 << 20,
                count: u64::MAX,
            },
        ] {
            assert_eq!(Cmd::decode(&c.encode()).unwrap(), c);
        }
        let mut b = Cmd::End.encode();
        b[0] = 7;
        assert!(Cmd::decode(&b)
            .unwrap_err()
            .to_string()
            .contains("unknown command 7"));
        let b = Cmd::Echo {
            size: (MAX_MSG + 1) as u32,
            count: 1,
        }
        .encode();
        assert!(Cmd::decode(&b).unwrap_err().to_string().contains("largest"));
    }
}
