//! Runs the benchmark binary on the platform's own mechanisms (Unix sockets,
//! or Windows named pipes) and the ones every platform has (pipe pair, TCP,
//! JSON-RPC): each server is a real second process, each figure is measured,
//! and each ratio names the baseline of its kind.

mod support;
use support::bench;

/// The platform's local-stream goal: raw baseline, ours, then the peers.
#[cfg(unix)]
const LOCAL: [&str; 4] = ["unix-raw", "ipc-unix", "tokio-unix", "interprocess"];
#[cfg(windows)]
const LOCAL: [&str; 4] = ["npipe-raw", "ipc-pipe", "tokio-pipe", "interprocess"];

/// Wine answers every process-time query with the caller's times, so the
/// benchmark reports no CPU figures there (and says it runs under Wine).
fn cpu_is_measured(run: &serde_json::Value) -> bool {
    !run["machine"]["os"].as_str().unwrap().contains("Wine")
}

#[test]
fn local_stream_pipe_pair_and_tcp_measure_across_processes_against_their_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let mut names: Vec<&str> = LOCAL.to_vec();
    names.extend(["pipe-raw", "tcp-raw", "ipc-tcp"]);
    let list = names.join(",");
    let (out, run) = bench(
        &[
            "--mechanism",
            &list,
            "--size",
            "64",
            "--duration",
            "0.05",
            "--rate",
            "2000",
            "--quick",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mechs = run["mechanisms"].as_array().unwrap();
    let got: Vec<&str> = mechs.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(got, names);
    for m in mechs {
        assert!(m["error"].is_null(), "{m}");
        let name = m["name"].as_str().unwrap();
        let want_base = if name == "ipc-tcp" {
            "tcp-raw"
        } else {
            LOCAL[0]
        };
        assert_eq!(m["baseline"].as_str(), Some(want_base), "{name}");
        let lat = &m["latency"][0];
        assert!(lat["dist"]["samples"].as_u64().unwrap() > 0, "{m}");
        assert!(
            m["throughput"][0]["msgs_per_s"].as_f64().unwrap() > 0.0,
            "{m}"
        );
        assert_eq!(m["paced"][0]["rate"].as_f64(), Some(2000.0), "{m}");
        // The server is a separate process, and its CPU time is measured.
        if cpu_is_measured(&run) {
            assert!(lat["cpu"]["server"].as_f64().unwrap() > 0.0, "{m}");
        } else {
            assert!(lat["cpu"]["server"].is_null(), "{m}");
        }
    }

    // The goal's mechanisms were also measured interleaved, baseline first.
    let inter = run["interleaved"].as_array().unwrap();
    let inames: Vec<&str> = inter.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(inames, LOCAL);
    for r in inter {
        assert_eq!(r["dist"]["samples"].as_u64(), Some(2000), "{r}");
    }
    let table = String::from_utf8_lossy(&out.stdout);
    let goal = format!("{} (default settings) 64B round trip p50", LOCAL[1]);
    assert!(
        table
            .lines()
            .any(|l| l.contains(&goal) && l.contains(&format!("x {}", LOCAL[0]))),
        "no goal line for {}: {table}",
        LOCAL[1]
    );
    // The other platform's mechanisms are named as not built here.
    assert!(table.contains("== not in this build"), "{table}");
}

#[cfg(all(feature = "jsonrpc-ipc-server", feature = "jsonrpsee"))]
#[test]
fn json_rpc_runs_over_the_local_stream_for_ours_and_the_peers() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["ipc-jsonrpc", "jsonrpc-ipc-server", "jsonrpsee-http"];
    let (out, run) = bench(
        &[
            "--mechanism",
            &names.join(","),
            "--size",
            "64",
            // Long enough that a busy machine cannot stall a load past its end.
            "--duration",
            "0.2",
            "--quick",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (m, name) in run["mechanisms"].as_array().unwrap().iter().zip(names) {
        assert_eq!(m["name"].as_str(), Some(name));
        assert!(m["error"].is_null(), "{m}");
        assert_eq!(m["baseline"].as_str(), Some("ipc-jsonrpc"));
        let rpc = m["rpc"].as_array().unwrap();
        assert_eq!(rpc.len(), 4, "{m}");
        for row in rpc {
            assert!(row["error"].is_null(), "{row}");
            assert!(row["calls_per_s"].as_f64().unwrap() > 0.0, "{row}");
        }
    }
}

#[test]
fn shared_memory_runs_across_processes_against_the_spin_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "spin-shm",
        "ipc-shm",
        "ipc-shm-async",
        "ipc-shm-async-messages",
    ];
    let (out, run) = bench(
        &[
            "--mechanism",
            &names.join(","),
            "--size",
            "64,1MiB",
            "--duration",
            "0.05",
            "--rate",
            "2000",
            "--quick",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (m, name) in run["mechanisms"].as_array().unwrap().iter().zip(names) {
        assert_eq!(m["name"].as_str(), Some(name));
        assert!(m["error"].is_null(), "{m}");
        if name != "spin-shm" {
            assert_eq!(m["baseline"].as_str(), Some("spin-shm"), "{m}");
        }
        for row in m["latency"].as_array().unwrap() {
            assert!(row["dist"]["samples"].as_u64().unwrap() > 0, "{row}");
        }
        for row in m["throughput"].as_array().unwrap() {
            assert!(row["gb_per_s"].as_f64().unwrap() > 0.0, "{row}");
        }
    }
}
