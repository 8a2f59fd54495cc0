//! A connection's send queue, bounded both in frames and in bytes, so a
//! client that does not read costs the server a known amount of memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// A frame on its way to the writer, holding its share of the byte budget
/// until it has been written.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) frame: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// The sending side of a connection's queue. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    budget: Arc<Semaphore>,
    capacity: u32,
    pub(crate) closed: CancellationToken,
    pub(crate) connection: u64,
    write_timeout: Duration,
}

impl Outbox {
    /// A queue of at most `frames` frames and `bytes` bytes (a single frame
    /// larger than `bytes` may still pass, alone).
    pub(crate) fn new(
        frames: usize,
        bytes: usize,
        closed: CancellationToken,
        connection: u64,
        write_timeout: Duration,
    ) -> (Outbox, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(frames.max(1));
        let capacity = bytes.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        let outbox = Outbox {
            tx,
            budget: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            closed,
            connection,
            write_timeout,
        };
        (outbox, rx)
    }

    fn cost(&self, frame: &Bytes) -> u32 {
        frame.len().clamp(1, self.capacity as usize) as u32
    }

    fn give_up(&self, why: &str) -> Error {
        tracing::warn!(
            connection = self.connection,
            "{why}; closing the connection"
        );
        self.closed.cancel();
        Error::Disconnected
    }

    /// Queues without waiting; a full queue means the client is not keeping
    /// up, and closes the connection.
    pub(crate) fn try_send(&self, frame: Bytes) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Disconnected);
        }
        let Ok(permit) = Arc::clone(&self.budget).try_acquire_many_owned(self.cost(&frame)) else {
            return Err(self.give_up("send buffer full: the client is not reading"));
        };
        match self.tx.try_send(Outgoing {
            frame,
            _budget: permit,
        }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                Err(self.give_up("send queue full: the client is not reading"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Disconnected),
        }
    }

    /// Queues, waiting for room up to the write timeout; a client that stays
    /// behind that long is disconnected.
    pub(crate) async fn send(&self, frame: Bytes) -> Result<()> {
        let cost = self.cost(&frame);
        // Room in both budgets, the usual case: queue without setting up the
        // waits below.
        if let Ok(budget) = Arc::clone(&self.budget).try_acquire_many_owned(cost) {
            match self.tx.try_reserve() {
                Ok(slot) => {
                    slot.send(Outgoing {
                        frame,
                        _budget: budget,
                    });
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(())) => return Err(Error::Disconnected),
                Err(mpsc::error::TrySendError::Full(())) => {}
            }
        }
        let queued = async {
            let permit = Arc::clone(&self.budget)
                .acquire_many_owned(cost)
                .await
                .map_err(|_| Error::Disconnected)?;
            self.tx
                .send(Outgoing {
                    frame,
                    _budget: permit,
                })
                .await
                .map_err(|_| Error::Disconnected)
        };
        tokio::select! {
            _ = self.closed.cancelled() => Err(Error::Disconnected),
            r = tokio::time::timeout(self.write_timeout, queued) => match r {
                Ok(r) => r,
                Err(_) => Err(self.give_up("the client has not read for the write timeout")),
            },
        }
    }

    /// True once the connection is closing or gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled() || self.tx.is_closed()
    }

    /// Waits until the connection is closing or gone.
    pub(crate) async fn closed(&self) {
        tokio::select! {
            _ = self.closed.cancelled() => {}
            _ = self.tx.closed() => {}
        }
    }
}
