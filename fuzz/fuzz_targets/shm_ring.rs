//! The shared-memory ring reader against a hostile peer (Linux): a real
//! server-side `ShmConnection` is handed its region over the bootstrap
//! socket as usual, then the fuzzer, as the client, writes arbitrary bytes
//! into the ring the server reads (its records) and arbitrary values into
//! the shared indices and flags. The reader must never panic, hang, or read
//! outside the mapping: each `try_recv` yields a message within the limit,
//! nothing, or an error (after which the connection is not used again).
//!
//! Input: byte 0 chooses which shared words are overwritten (bit 0: the
//! ring's head, else a head that covers the data written; bit 1: the ring's
//! tail; bit 2: the client's closed flag), bytes 1-24 are those words, the
//! rest is written at the start of the ring's data area. The reader takes a
//! record by its header word alone (the first 8 bytes of a slot), so the
//! bytes there are read as records whatever the head says; the head matters
//! when the word at the reader's tail is zero.
#![no_main]

#[cfg(target_os = "linux")]
mod linux {
    use std::io::IoSliceMut;
    use std::mem::MaybeUninit;
    use std::os::fd::OwnedFd;
    use std::sync::atomic::Ordering;
    use std::sync::{Mutex, OnceLock};

    use ipc_core::Address;
    use ipc_shm::layout::{Control, CLIENT, DATA_OFFSET};
    use ipc_shm::{ShmListener, ShmOptions};

    const CAPACITY: usize = 4096;
    const MAX_MESSAGE: usize = 64 * 1024;

    struct Fixture {
        rt: tokio::runtime::Runtime,
        listener: ShmListener,
        path: std::path::PathBuf,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> &'static Mutex<Fixture> {
        static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("fuzz.sock");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let addr = Address::Shm(path.to_str().unwrap().to_owned());
            let opts = ShmOptions::new()
                .ring_capacity(CAPACITY)
                .max_message_len(MAX_MESSAGE);
            let listener = {
                let _guard = rt.enter();
                ShmListener::bind_with(&addr, opts).expect("bind")
            };
            Mutex::new(Fixture {
                rt,
                listener,
                path,
                _dir: dir,
            })
        })
    }

    /// Receives the region descriptor the server sends with its hello.
    fn receive_fd(sock: &std::os::unix::net::UnixStream) -> OwnedFd {
        let mut buf = [0u8; 16];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut buf)];
        rustix::net::recvmsg(sock, &mut iov, &mut anc, rustix::net::RecvFlags::empty())
            .expect("hello");
        let mut fd = None;
        for m in anc.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = m {
                fd = fds.next();
            }
        }
        fd.expect("the region's descriptor")
    }

    fn word(data: &[u8], at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[at..at + 8]);
        u64::from_le_bytes(b)
    }

    pub fn run(data: &[u8]) {
        if data.len() < 25 {
            return;
        }
        let (flags, words, payload) = (data[0], &data[1..25], &data[25..]);
        let payload = &payload[..payload.len().min(CAPACITY)];
        let mut fx = fixture().lock().unwrap_or_else(|e| e.into_inner());
        let fx = &mut *fx;

        let sock = std::os::unix::net::UnixStream::connect(&fx.path).expect("connect");
        let mut conn = fx
            .rt
            .block_on(fx.listener.accept_connection())
            .expect("accept");
        let fd = receive_fd(&sock);
        let len = rustix::fs::fstat(&fd).expect("fstat").st_size as usize;
        assert_eq!(len, ipc_shm::layout::region_len(CAPACITY));
        // SAFETY: a fresh shared mapping of the whole region file, unmapped
        // below before `fd` is dropped; nothing else in this process uses it.
        let base = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .expect("mmap")
        .cast::<u8>();
        // SAFETY: the region starts with the control block, whose fields
        // are all atomics, and the mapping lives until the munmap below.
        let ctl = unsafe { &*(base as *const Control) };
        // SAFETY: ring CLIENT's data area is the CAPACITY bytes at
        // DATA_OFFSET, inside the mapping; `payload` is at most CAPACITY.
        unsafe {
            std::ptr::copy_nonoverlapping(payload.as_ptr(), base.add(DATA_OFFSET), payload.len())
        };
        let ring = &ctl.rings[CLIENT];
        let head = if flags & 1 != 0 {
            word(words, 0)
        } else {
            (payload.len() as u64).next_multiple_of(16)
        };
        if flags & 2 != 0 {
            ring.tail.0.store(word(words, 8), Ordering::Release);
        }
        if flags & 4 != 0 {
            ctl.bells[CLIENT]
                .0
                .closed
                .store(word(words, 16) as u32, Ordering::Release);
        }
        ring.head.0.store(head, Ordering::Release);

        for _ in 0..64 {
            match conn.try_recv() {
                Ok(Some(msg)) => assert!(msg.len() <= MAX_MESSAGE, "a {}-byte message", msg.len()),
                Ok(None) | Err(_) => break,
            }
        }
        drop(conn);
        // SAFETY: `base` and `len` are the mapping made above; `ctl` is not
        // used after this.
        unsafe { rustix::mm::munmap(base.cast(), len) }.expect("munmap");
        drop(fd);
        drop(sock);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    #[cfg(target_os = "linux")]
    linux::run(data);
    #[cfg(not(target_os = "linux"))]
    let _ = data;
});
