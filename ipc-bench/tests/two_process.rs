//! Runs the benchmark binary end to end: it spawns its own server processes,
//! and the results it writes must hold exactly what was asked for.
#![cfg(unix)]

use std::process::Command;

mod support;
use support::bench;

#[test]
fn raw_and_framed_mechanisms_measure_across_processes_and_write_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let (out, run) = bench(
        &[
            "--mechanism",
            "unix-raw,pipe-raw,ipc-unix,memcpy",
            "--size",
            "64,64KiB",
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
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("round-trip latency"), "{table}");
    assert!(table.contains("== goals"), "{table}");

    let mechs = run["mechanisms"].as_array().unwrap();
    let names: Vec<&str> = mechs.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["unix-raw", "pipe-raw", "ipc-unix", "memcpy"]);
    let rts = run["settings"]["round_trips"].as_array().unwrap();
    for m in &mechs[..3] {
        assert!(m["error"].is_null(), "{m}");
        let lat = m["latency"].as_array().unwrap();
        assert_eq!(lat.len(), 2, "{m}");
        for (row, want) in lat.iter().zip(rts) {
            // Every recorded round trip is there unless the time cap cut it short.
            let n = row["dist"]["samples"].as_u64().unwrap();
            assert!(n > 0 && n <= want.as_u64().unwrap(), "{row}");
            let p50 = row["dist"]["p50_ns"].as_u64().unwrap();
            let max = row["dist"]["max_ns"].as_u64().unwrap();
            assert!(p50 > 0 && p50 <= max, "{row}");
        }
        assert_eq!(m["throughput"].as_array().unwrap().len(), 2);
        assert!(m["throughput"][0]["msgs_per_s"].as_f64().unwrap() > 0.0);
        assert_eq!(m["paced"][0]["rate"].as_f64().unwrap(), 2000.0);
        // The server is a separate process, and its CPU time is measured.
        let server_cpu = m["latency"][0]["cpu"]["server"].as_f64();
        assert!(server_cpu.is_some_and(|c| c > 0.0), "{m}");
    }
    // The goal's pair was also measured interleaved, every round trip recorded.
    let inter = run["interleaved"].as_array().unwrap();
    let inames: Vec<&str> = inter.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(inames, ["unix-raw", "ipc-unix"]);
    for r in inter {
        assert_eq!(r["dist"]["samples"].as_u64(), Some(2000), "{r}");
    }
    assert!(table.contains("interleaved"), "{table}");

    // memcpy has no second process: throughput only.
    assert!(mechs[3]["latency"].as_array().unwrap().is_empty());
    assert!(mechs[3]["throughput"][1]["gb_per_s"].as_f64().unwrap() > 0.0);

    for f in [
        "report.md",
        "latency-by-size.svg",
        "latency-cdf.svg",
        "throughput-by-size.svg",
    ] {
        let body = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(body.len() > 200, "{f} is too short");
    }
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("| unix-raw |"), "{report}");
}

#[test]
fn chosen_loads_run_alone_and_kept_awake_cpus_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (out, run) = bench(
        &[
            "--quick",
            "--json",
            "--keep-cpus-awake",
            "--mechanism",
            "unix-raw,ipc-jsonrpc",
            "--size",
            "64",
            "--load",
            "2x3",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rpc = run["mechanisms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ipc-jsonrpc")
        .expect("ipc-jsonrpc ran")["rpc"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rpc.len(), 1, "only the load asked for: {rpc:?}");
    assert_eq!(rpc[0]["connections"], 2);
    assert_eq!(rpc[0]["in_flight"], 3);
    assert!(rpc[0]["calls_per_s"].as_f64().unwrap() > 0.0, "{rpc:?}");

    let awake = &run["settings"]["cpus_kept_awake"];
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(awake["threads"], cpus, "{awake}");
    if cfg!(target_os = "linux") {
        assert_eq!(awake["priority"], "SCHED_IDLE", "{awake}");
    }
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("CPUs kept awake"), "{report}");

    // The busy loops end with the run.
    #[cfg(target_os = "linux")]
    {
        let exe = env!("CARGO_BIN_EXE_ipc-bench");
        let left: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.starts_with(exe) && c.contains("keep-awake"))
            .collect();
        assert!(left.is_empty(), "busy loops outlived the run: {left:?}");
    }
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = ipc_testkit::output(
        Command::new(env!("CARGO_BIN_EXE_ipc-bench"))
            .args(["--mechanism", "carrier-pigeon", "--out-dir"])
            .arg(dir.path()),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown mechanism \"carrier-pigeon\""),
        "{err}"
    );
    assert!(err.contains("unix-raw"), "lists what exists: {err}");

    let out =
        ipc_testkit::output(Command::new(env!("CARGO_BIN_EXE_ipc-bench")).args(["--size", "3MiB"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range"));
}

#[test]
fn a_server_that_cannot_start_is_reported_and_the_run_goes_on() {
    // A regular file where the unix-raw server must bind its socket: that
    // server exits with an error; the run still completes and says so.
    let dir = tempfile::tempdir().unwrap();
    let eps = tempfile::tempdir().unwrap();
    std::fs::write(eps.path().join("unix-raw.ep"), b"not a socket").unwrap();
    let output = ipc_testkit::output(
        Command::new(env!("CARGO_BIN_EXE_ipc-bench"))
            .args([
                "--mechanism",
                "unix-raw,pipe-raw",
                "--size",
                "64",
                "--duration",
                "0.02",
            ])
            .args(["--rate", "1000", "--quick", "--out-dir"])
            .arg(dir.path())
            .env("IPC_BENCH_ENDPOINT_DIR", eps.path()),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("results.json")).unwrap())
            .unwrap();
    let err = run["mechanisms"][0]["error"]
        .as_str()
        .expect("unix-raw failed");
    assert!(err.contains("the unix-raw server did not start"), "{err}");
    assert!(
        run["mechanisms"][1]["error"].is_null(),
        "pipe-raw still ran"
    );
    assert_eq!(run["mechanisms"][1]["latency"].as_array().unwrap().len(), 1);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("== failed to start"), "{table}");
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(
        report.contains("**FAILED: the unix-raw server did not start"),
        "{report}"
    );
}

#[test]
fn the_unix_goal_is_judged_for_both_settings_of_our_transport_each_named() {
    let dir = tempfile::tempdir().unwrap();
    let (out, run) = bench(
        &[
            "--mechanism",
            "unix-raw,ipc-unix,ipc-unix-busypoll",
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
    let inter = run["interleaved"].as_array().unwrap();
    let inames: Vec<&str> = inter.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(inames, ["unix-raw", "ipc-unix", "ipc-unix-busypoll"]);
    for r in inter {
        assert_eq!(r["dist"]["samples"].as_u64(), Some(2000), "{r}");
    }
    let table = String::from_utf8_lossy(&out.stdout);
    let goals: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("== goals"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    for who in [
        "ipc-unix (default settings)",
        "ipc-unix-busypoll (busy polling on)",
    ] {
        assert!(
            goals
                .iter()
                .any(|g| g.contains(&format!("{who} 64B round trip p50"))
                    && g.contains("x unix-raw")),
            "no goal line for {who}: {goals:#?}"
        );
    }
}
