//! Replays every committed fuzz corpus input (the seeds, and any input that
//! once made a target fail) through the fuzz targets' own checks, on the
//! stable toolchain and in every test run. An input that a fuzz run finds
//! failing is fixed, then added to `fuzz/corpus/<target>/` so it stays fixed.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod checks;

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("skipped: no corpus at {}", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the {target} corpus is empty");
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{target}: {} fails: {why}", file.display());
        }
    }
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn length_codec_corpus() {
    replay("length_codec", checks::check_length_codec);
}

#[test]
fn json_stream_corpus() {
    replay("json_stream", checks::check_json_stream);
}

#[test]
fn jsonrpc_corpus() {
    replay("jsonrpc", checks::check_jsonrpc);
}

#[test]
fn address_corpus() {
    replay("address", checks::check_address);
}
