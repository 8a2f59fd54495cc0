//! The server process is killed with SIGKILL and restarted twice while
//! clients with the reconnect option keep calling it.
#![cfg(target_os = "linux")]

mod abuse_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abuse_support::*;
use ipc::{Client, Error, Reconnect};
use serde_json::Value;

#[test]
#[ignore = "child-process entry, run by the other tests"]
fn child_abuse_server() {
    run_child_server();
}

const CLIENTS: usize = 8;
const LOOPS: usize = 4;

/// What became of one request.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Answered, by the server process with this pid.
    Answered(u32),
    /// Failed with `Error::Disconnected`.
    Disconnected,
    /// Failed some other way (never expected).
    Other(String),
}

type Outcomes = Arc<Mutex<Vec<(String, Outcome)>>>;

async fn start(address: &str, ledger: &str) -> Proc {
    let proc = spawn_entry(
        "child_abuse_server",
        &[(ADDR_VAR, address), (LEDGER_VAR, ledger)],
        None,
    );
    wait_for_server(address).await;
    proc
}

/// Waits until every client has had answers from server `pid`, 1,000 in all.
async fn until_every_client_reaches(outcomes: &Outcomes, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (reached, answers) = {
            let outcomes = outcomes.lock().unwrap();
            let by_pid: Vec<&String> = outcomes
                .iter()
                .filter(|(_, o)| *o == Outcome::Answered(pid))
                .map(|(tag, _)| tag)
                .collect();
            let clients: HashSet<&str> = by_pid
                .iter()
                .map(|t| t.split('-').next().unwrap())
                .collect();
            (clients.len(), by_pid.len())
        };
        if reached == CLIENTS && answers >= 1000 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {reached} of {CLIENTS} clients reached server {pid} ({answers} answers)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Eight clients with the reconnect option, four request loops each, call
/// a method that records every execution in a ledger file. The server is
/// killed with SIGKILL and restarted on the same path twice. Every request
/// ends answered or with `Disconnected` (none hangs, none fails otherwise);
/// every answered request was executed exactly once; no request was ever
/// executed twice (nothing is resent behind the caller's back); some
/// requests in flight at the kills did fail with `Disconnected`; and every
/// client carried on with each restarted server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_under_load_clients_reconnect() {
    init_tracing();
    let dir = temp_dir();
    let (address, _) = unix_address(dir.path(), "restart.sock");
    let ledger = dir.path().join("ledger.txt");
    let ledger_str = ledger.to_str().unwrap().to_owned();
    let mut server = start(&address, &ledger_str).await;
    let mut pids = vec![server.pid()];

    let policy = Reconnect {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        max_attempts: None,
    };
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let a = address.clone();
        let client = Client::builder()
            .reconnect(policy.clone())
            .request_timeout(Some(Duration::from_secs(30)))
            .connect_with(move || {
                let a = a.clone();
                async move { ipc::connect_transport(&a).await }
            })
            .await
            .expect("connect");
        clients.push(client);
    }

    let outcomes: Outcomes = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for l in 0..LOOPS {
            let (client, outcomes, stop) =
                (client.clone(), Arc::clone(&outcomes), Arc::clone(&stop));
            loops.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tag = format!("c{c}-l{l}-{i}");
                    let outcome = match tokio::time::timeout(
                        Duration::from_secs(60),
                        client.request::<Value>("mark", (&tag, i % 4)),
                    )
                    .await
                    {
                        Err(_) => panic!("request {tag} hung"),
                        Ok(Ok(v)) => {
                            assert_eq!(v["tag"], tag.as_str(), "answer to another request");
                            Outcome::Answered(v["pid"].as_u64().unwrap() as u32)
                        }
                        Ok(Err(Error::Disconnected)) => Outcome::Disconnected,
                        Ok(Err(e)) => Outcome::Other(format!("{e:?}")),
                    };
                    outcomes.lock().unwrap().push((tag, outcome));
                    i += 1;
                }
            }));
        }
    }

    for _restart in 0..2 {
        until_every_client_reaches(&outcomes, *pids.last().unwrap()).await;
        server.kill();
        server = start(&address, &ledger_str).await;
        pids.push(server.pid());
    }
    until_every_client_reaches(&outcomes, *pids.last().unwrap()).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        within(60, "request loops", l).await.expect("request loop");
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut executed: HashMap<&str, usize> = HashMap::new();
    for tag in text.lines() {
        *executed.entry(tag).or_default() += 1;
    }
    let twice: Vec<_> = executed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "requests executed more than once: {twice:?}"
    );
    let mut disconnected = 0;
    let mut answered = 0;
    for (tag, outcome) in &outcomes {
        match outcome {
            Outcome::Answered(pid) => {
                assert!(
                    pids.contains(pid),
                    "{tag} answered by an unknown process {pid}"
                );
                assert_eq!(
                    executed.get(tag.as_str()),
                    Some(&1),
                    "{tag} was answered but not executed once"
                );
                answered += 1;
            }
            Outcome::Disconnected => disconnected += 1,
            Outcome::Other(e) => panic!("{tag} failed with {e}, not Disconnected"),
        }
    }
    let known: HashSet<&str> = outcomes.iter().map(|(t, _)| t.as_str()).collect();
    assert!(
        executed.keys().all(|t| known.contains(t)),
        "the server executed a request no client made"
    );
    assert!(
        disconnected > 0,
        "no request was in flight at a kill; the test proves nothing"
    );
    println!(
        "{} requests: {answered} answered, {disconnected} failed with Disconnected at the two kills; servers {pids:?}",
        outcomes.len()
    );
}
