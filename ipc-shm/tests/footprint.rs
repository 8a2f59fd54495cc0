//! The rings take memory as they are written, not as they are sized: a
//! connection that carries small messages keeps to the first pages of each
//! ring (the early padding of `src/ring.rs`), so its shared memory stays a
//! few pages whatever the ring capacity. The default capacity is chosen for
//! bulk transfer on that ground. Measured by the resident size of the
//! region's mappings in this process (`/proc/self/smaps`), both ends being
//! here.
#![cfg(target_os = "linux")]

use std::sync::Mutex;

use ipc_core::Address;
use ipc_shm::{ShmConnection, ShmListener, ShmOptions, ShmTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod util;
use util::temp_addr;

/// The ring capacity this file is about: the default.
const DEFAULT_RING: usize = 8 << 20;

/// Resident bytes a region's mapping may hold after small messages only:
/// the control page and the first pages of the two rings, with room to
/// spare (16 pages).
const SMALL_TRAFFIC_LIMIT: usize = 64 << 10;

/// Held by each test for its whole run: the tests count the mappings of
/// this process, so one test's region must be gone before the next looks.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The `(size, resident)` bytes of every mapping of an ipc-shm region in
/// this process.
fn region_mappings() -> Vec<(usize, usize)> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("reading /proc/self/smaps");
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header line: range, perms, offset, dev, inode, path.
            if let Some(m) = current.take() {
                found.push(m);
            }
            if line.contains("/memfd:ipc-shm") {
                current = Some((0, 0));
            }
        } else if let Some((size, rss)) = current.as_mut() {
            let kib = words.next().and_then(|n| n.parse::<usize>().ok());
            match (first, kib) {
                ("Size:", Some(kib)) => *size = kib << 10,
                ("Rss:", Some(kib)) => *rss = kib << 10,
                _ => {}
            }
        }
    }
    found.extend(current);
    found
}

/// Checks that both ends' mappings of the one region are there, sized for
/// the default rings, and that each holds at most `limit` resident bytes;
/// returns the largest resident size.
fn check_mappings(limit: usize, what: &str) -> usize {
    let maps = region_mappings();
    assert_eq!(
        maps.len(),
        2,
        "expected the server's and the client's mapping of one region, found {maps:?}"
    );
    for &(size, rss) in &maps {
        assert!(
            size >= 2 * DEFAULT_RING,
            "a mapping of {size} bytes is smaller than two default rings"
        );
        assert!(
            rss <= limit,
            "{what}: a mapping holds {rss} resident bytes of its {size}, more than {limit}"
        );
    }
    maps.iter().map(|&(_, rss)| rss).max().unwrap()
}

/// The message sizes of the conversations: 1 to 1000 bytes, varied.
fn small_size(i: usize) -> usize {
    1 + (i * 37) % 1000
}

#[test]
fn small_messages_keep_a_default_connection_to_a_few_pages() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(
        ShmOptions::new().get_ring_capacity(),
        DEFAULT_RING,
        "this test measures the default ring"
    );
    let dir = tempfile::tempdir().unwrap();
    let addr = temp_addr(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut listener = rt.block_on(async { ShmListener::bind(&addr) }).unwrap();
    let client_addr = addr.clone();
    let client = std::thread::spawn(move || {
        let mut conn = ShmConnection::connect(&client_addr, &ShmOptions::new()).unwrap();
        // Echo until the server's empty message, then take the bulk.
        loop {
            let msg = conn.recv().unwrap().to_vec();
            if msg.is_empty() {
                break;
            }
            conn.send(&msg).unwrap();
        }
        let mut buf = Vec::new();
        for _ in 0..BULK_MESSAGES {
            conn.recv_into(&mut buf).unwrap();
            assert_eq!(buf.len(), BULK_LEN);
        }
        conn.send(b"done").unwrap();
        // Stay connected until the server has looked at the mappings.
        assert!(conn.recv().unwrap().is_empty());
    });
    let mut conn = rt.block_on(listener.accept_connection()).unwrap();

    let msg = vec![0x5au8; 1000];
    for i in 0..20_000 {
        let n = small_size(i);
        conn.send(&msg[..n]).unwrap();
        assert_eq!(conn.recv().unwrap().len(), n);
    }
    check_mappings(
        SMALL_TRAFFIC_LIMIT,
        "after 20,000 round trips of 1-1000 bytes",
    );

    // The measurement sees the pages a stream writes: 4 MiB through the
    // ring (from its start, which it has not yet passed) make it resident.
    conn.send(b"").unwrap();
    let bulk = vec![0xc3u8; BULK_LEN];
    for _ in 0..BULK_MESSAGES {
        conn.send(&bulk).unwrap();
    }
    assert_eq!(&*conn.recv().unwrap(), b"done");
    let most = check_mappings(usize::MAX, "after the bulk messages");
    assert!(
        most >= 3 << 20,
        "a mapping holds only {most} resident bytes after 4 MiB went through its ring"
    );
    conn.send(b"").unwrap();
    client.join().unwrap();
}

const BULK_LEN: usize = 512 << 10;
const BULK_MESSAGES: usize = 8;

#[test]
fn small_frames_keep_a_default_async_transport_to_a_few_pages() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let addr: Address = temp_addr(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut listener = ShmListener::bind(&addr).unwrap();
        let echo = tokio::spawn(async move {
            let mut t = listener.accept_shm().await.unwrap();
            let mut buf = vec![0u8; 1000];
            loop {
                let mut len = [0u8; 2];
                if t.read_exact(&mut len).await.is_err() {
                    return;
                }
                let n = u16::from_le_bytes(len) as usize;
                t.read_exact(&mut buf[..n]).await.unwrap();
                t.write_all(&len).await.unwrap();
                t.write_all(&buf[..n]).await.unwrap();
                t.flush().await.unwrap();
            }
        });
        let mut t = ShmTransport::connect(&addr, &ShmOptions::new())
            .await
            .unwrap();
        let mut frame = Vec::with_capacity(1002);
        let mut back = vec![0u8; 1002];
        for i in 0..5_000 {
            let n = small_size(i);
            frame.clear();
            frame.extend_from_slice(&(n as u16).to_le_bytes());
            frame.resize(2 + n, i as u8);
            t.write_all(&frame).await.unwrap();
            t.flush().await.unwrap();
            t.read_exact(&mut back[..2 + n]).await.unwrap();
            assert_eq!(back[..2 + n], frame[..], "frame {i} came back changed");
        }
        check_mappings(
            SMALL_TRAFFIC_LIMIT,
            "after 5,000 round trips of 3-1002-byte frames",
        );
        drop(t);
        echo.await.unwrap();
    });
}
