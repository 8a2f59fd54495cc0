//! FIFOs: exact mode, one-way streams between processes, clear errors when
//! the other end is missing or gone, and the same care about existing paths
//! as socket files.
#![cfg(unix)]

mod util;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use ipc_core::Error;
use ipc_unix::fifo::{self, FifoReader, FifoWriter};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use util::*;

fn is_fifo(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

#[test]
fn fifo_has_the_exact_mode_and_is_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o600, 0o640, 0o622] {
        let path = dir.path().join("m.fifo");
        let f = fifo::create(&path, mode).unwrap();
        assert!(is_fifo(&path));
        assert_eq!(mode_of(&path), mode);
        assert_eq!(f.path(), path);
        assert_eq!(dir_entries(dir.path()), ["m.fifo"]);
        drop(f);
        assert!(!path.exists());
    }
    let e = fifo::create(dir.path().join("bad.fifo"), 0o4600).unwrap_err();
    assert!(e.to_string().contains("mode"), "{e}");
    assert!(dir_entries(dir.path()).is_empty());
}

/// Child side of the cross-process tests: opens the FIFO at `path` for
/// writing and writes `lines` lines "`prefix` i".
async fn write_lines(path: &str, prefix: &str, lines: usize) {
    let mut w = FifoWriter::open(path).unwrap();
    for i in 0..lines {
        w.write_all(format!("{prefix} {i}\n").as_bytes())
            .await
            .unwrap();
    }
    w.flush().await.unwrap();
}

#[test]
fn lines_from_another_process_arrive_in_order_then_end() {
    const TEST: &str = "lines_from_another_process_arrive_in_order_then_end";
    const LINES: usize = 500;
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Some((role, path)) = child_role() {
        rt.block_on(write_lines(&path, &role, LINES));
        return;
    }
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.fifo");
        let f = fifo::create(&path, 0o600).unwrap();
        let reader = f.open_reader().unwrap();
        let mut child = spawn_self(TEST, "event", path.to_str().unwrap(), None);
        let mut lines = BufReader::new(reader).lines();
        let mut got = Vec::new();
        while let Some(line) = within("next line", lines.next_line()).await.unwrap() {
            got.push(line);
        }
        child.wait_ok();
        let want: Vec<String> = (0..LINES).map(|i| format!("event {i}")).collect();
        assert_eq!(got, want);
    });
}

#[test]
fn a_persistent_reader_outlives_writers_that_come_and_go() {
    const TEST: &str = "a_persistent_reader_outlives_writers_that_come_and_go";
    const LINES: usize = 200;
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Some((role, path)) = child_role() {
        rt.block_on(write_lines(&path, &role, LINES));
        return;
    }
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.fifo");
        let f = fifo::create(&path, 0o600).unwrap();
        let reader = f.open_persistent_reader().unwrap();
        assert!(reader.is_persistent());
        let mut lines = BufReader::new(reader).lines();
        for writer in ["first", "second"] {
            let mut child = spawn_self(TEST, writer, path.to_str().unwrap(), None);
            for i in 0..LINES {
                let line = within("next line", lines.next_line()).await.unwrap();
                assert_eq!(line.as_deref(), Some(format!("{writer} {i}").as_str()));
            }
            child.wait_ok();
        }
        // Both writers have exited: a plain reader would be at its end now;
        // this one waits for the next writer.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(300), lines.next_line()).await;
        assert!(waiting.is_err(), "the stream ended: {waiting:?}");
        let mut third = FifoWriter::open(&path).unwrap();
        third.write_all(b"third 0\n").await.unwrap();
        drop(third);
        let line = within("line of a later writer", lines.next_line())
            .await
            .unwrap();
        assert_eq!(line.as_deref(), Some("third 0"));

        // Opened by path, the same; a symlink is refused as for other opens.
        let by_path = FifoReader::open_persistent(&path).unwrap();
        assert!(by_path.is_persistent());
        let link = dir.path().join("link.fifo");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = FifoReader::open_persistent(&link).unwrap_err();
        assert!(matches!(e, Error::Insecure { .. }), "{e:?}");
    });
}

#[tokio::test]
async fn writer_without_a_reader_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody-reads.fifo");
    let f = fifo::create(&path, 0o600).unwrap();
    for e in [
        FifoWriter::open(&path).unwrap_err(),
        f.open_writer().unwrap_err(),
    ] {
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("open for reading"), "{e}");
    }
    let e = FifoWriter::open(dir.path().join("missing.fifo")).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
}

#[tokio::test]
async fn reader_sees_the_data_then_end_when_the_writer_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let f = fifo::create(dir.path().join("r.fifo"), 0o600).unwrap();
    let mut r = f.open_reader().unwrap();
    let mut w = f.open_writer().unwrap();
    let data = ipc_core::conformance::pattern(200_000, 5);
    let write = async {
        w.write_all(&data).await.unwrap();
        drop(w);
    };
    let mut got = Vec::new();
    let (_, read) = within("read to end", async {
        tokio::join!(write, r.read_to_end(&mut got))
    })
    .await;
    read.unwrap();
    assert_eq!(got, data);
}

#[tokio::test]
async fn writer_gets_broken_pipe_when_the_reader_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.fifo");
    let _f = fifo::create(&path, 0o600).unwrap();
    let r = FifoReader::open(&path).unwrap();
    let mut w = FifoWriter::open(&path).unwrap();
    w.write_all(b"first").await.unwrap();
    drop(r);
    let e = within("write to a FIFO without reader", async {
        loop {
            if let Err(e) = w.write_all(&[0u8; 4096]).await {
                return e;
            }
        }
    })
    .await;
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e:?}");
}

#[tokio::test]
async fn existing_paths_are_handled_with_care() {
    let dir = tempfile::tempdir().unwrap();

    // A regular file is never replaced.
    let file = dir.path().join("file.fifo");
    std::fs::write(&file, b"keep").unwrap();
    let e = fifo::create(&file, 0o600).unwrap_err();
    assert!(e.to_string().contains("not a FIFO"), "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    let e = FifoReader::open(&file).unwrap_err();
    assert!(e.to_string().contains("not a FIFO"), "{e}");

    // A symlink is refused, for creating and for opening.
    let target = dir.path().join("target.fifo");
    let target_fifo = fifo::create(&target, 0o600).unwrap();
    let link = dir.path().join("link.fifo");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let e = fifo::create(&link, 0o600).unwrap_err();
    assert!(matches!(e, Error::Insecure { .. }), "{e:?}");
    let e = FifoReader::open(&link).unwrap_err();
    assert!(matches!(e, Error::Insecure { .. }), "{e:?}");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());

    // A FIFO somebody reads is in use.
    let _reader = target_fifo.open_reader().unwrap();
    let e = fifo::create(&target, 0o600).unwrap_err();
    assert!(matches!(e, Error::AddressInUse { .. }), "{e:?}");
    assert!(is_fifo(&target));

    // A FIFO nobody reads is stale and replaced by a new one.
    let stale = dir.path().join("stale.fifo");
    // Made by a process that exited without cleaning up (leaked here).
    std::mem::forget(fifo::create(&stale, 0o644).unwrap());
    let old = std::fs::metadata(&stale).unwrap().ino();
    let f = fifo::create(&stale, 0o600).unwrap();
    assert_ne!(std::fs::metadata(&stale).unwrap().ino(), old);
    assert_eq!(mode_of(&stale), 0o600);
    drop(f);

    let e = FifoReader::open(dir.path().join("missing.fifo")).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");

    assert_eq!(
        dir_entries(dir.path()),
        ["file.fifo", "link.fifo", "target.fifo"]
    );
}

#[tokio::test]
async fn drop_removes_only_its_own_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own.fifo");
    let first = fifo::create(&path, 0o600).unwrap();
    std::fs::remove_file(&path).unwrap();
    let second = fifo::create(&path, 0o600).unwrap();
    let seconds = std::fs::metadata(&path).unwrap().ino();
    // The first no longer owns the path: it opens nothing and removes nothing.
    let e = first.open_reader().unwrap_err();
    assert!(matches!(e, Error::Insecure { .. }), "{e:?}");
    first.remove().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), seconds);
    second.remove().unwrap();
    assert!(!path.exists());
}
