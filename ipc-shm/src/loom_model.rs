//! A loom model of the ring protocol and the bell: every interleaving (up to
//! the preemption bound) of a producer and a consumer that both sleep when
//! they cannot progress. Loom reports a lost wake-up as a deadlock and a
//! protocol error as a failed assertion. The record header words are loom
//! atomics (kept beside the data area, see `Region::loom_word`), so the
//! model also explores which of a slot's stores the reader can see: a
//! stale header of an earlier lap would show up as a message too many or a
//! corrupt ring.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p ipc-shm --lib --release loom`.

use std::sync::Arc;
use std::time::Duration;

use ipc_core::{Error, PeerInfo};

use crate::blocking::ShmConnection;
use crate::layout::{CLIENT, MIN_RING_CAPACITY, SERVER};
use crate::link::{Link, WaitPolicy};
use crate::region::Region;
use crate::ring::{Consumer, Producer};
use crate::sys::door::Door;

fn pair() -> (ShmConnection, ShmConnection) {
    let region = Arc::new(Region::loom(MIN_RING_CAPACITY));
    let end = |me: usize| {
        let policy = WaitPolicy {
            spin: Duration::ZERO,
            liveness: Duration::ZERO,
            busy_spin: Duration::ZERO,
        };
        let link = Arc::new(Link::in_process(region.clone(), me, Door, policy));
        ShmConnection::from_parts(
            Producer::new(region.clone(), me),
            Consumer::new(region.clone(), 1 - me),
            link,
            usize::MAX,
            PeerInfo::default(),
        )
    };
    (end(CLIENT), end(SERVER))
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

/// Three messages of which only two fit: the producer sleeps for space and
/// the consumer sleeps for data; every message arrives intact and in order.
#[test]
fn loom_full_ring_no_lost_wakeup() {
    model(|| {
        let (mut a, b) = pair();
        let (mut tx, _rx) = b.into_split();
        let t = loom::thread::spawn(move || {
            for i in 0..3u8 {
                tx.send(&[i; 2000]).unwrap();
            }
        });
        for i in 0..3u8 {
            let m = a.recv().unwrap();
            assert_eq!(m.len(), 2000);
            assert!(m.iter().all(|&x| x == i));
        }
        t.join().unwrap();
    });
}

/// A message larger than the ring goes in pieces, and closing after it is
/// seen only after the message.
#[test]
fn loom_pieces_then_close() {
    model(|| {
        let (mut a, b) = pair();
        let t = loom::thread::spawn(move || {
            let (mut tx, _rx) = b.into_split();
            tx.send(&[7; 5000]).unwrap();
        });
        let m = a.recv().unwrap();
        assert_eq!(m.len(), 5000);
        assert!(m.iter().all(|&x| x == 7));
        drop(m);
        assert!(matches!(a.recv(), Err(Error::Disconnected)));
        t.join().unwrap();
    });
}

/// Whole messages wrap around the ring (padding, then a record at offset 0),
/// so the slot after the last one holds the header of a message of the lap
/// before (a real, valid header): the producer zeroes it before it publishes
/// the record in front of it, and the reader, after the three messages sent,
/// sees the close and not that message a second time.
#[test]
fn loom_stale_header_after_wrap() {
    model(|| three_messages_then_close(2000));
}

/// Sends three messages of `len` bytes from a second thread and closes; the
/// first thread receives them intact, in order, then the close.
fn three_messages_then_close(len: usize) {
    let (mut a, b) = pair();
    let t = loom::thread::spawn(move || {
        let (mut tx, _rx) = b.into_split();
        for i in 0..3u8 {
            tx.send(&vec![i; len]).unwrap();
        }
    });
    for i in 0..3u8 {
        let m = a.recv().unwrap();
        assert_eq!(m.len(), len);
        assert!(m.iter().all(|&x| x == i));
    }
    assert!(matches!(a.recv(), Err(Error::Disconnected)));
    t.join().unwrap();
}

/// Small messages on a drained ring: past the first window the producer
/// may find everything released and pad to the end early (or, when the
/// consumer has not caught up yet, go on in sequence); either way every
/// message arrives intact and in order, and then the close.
#[test]
fn loom_early_wrap() {
    model(|| three_messages_then_close(600));
}
