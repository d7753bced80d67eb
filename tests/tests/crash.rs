//! Crash tests: a CLI writer (`shoal write`), and `shoal-server` under concurrent
//! appending clients, killed with SIGKILL at random points, many times, on local disk and
//! on the S3 gateway. After every kill the table opens, every acknowledged write is
//! present exactly once, an unacknowledged write is either whole or absent (and, retried
//! with its application version, applied or replayed, never doubled), and at the end
//! VACUUM removes the orphaned data files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use arrow::array::Int64Array;
use shoal_format::Table;
use shoal_tests::{free_port, s3_base, s3_uri, workspace_bin, Reaper, Rng};

const ROWS: i64 = 3;

async fn id_counts(t: &Table) -> BTreeMap<i64, usize> {
    let snap = t.snapshot().await.expect("the table opens after a kill");
    let batches = t.scan(snap).with_columns(&["id"]).collect().await.unwrap();
    let mut counts = BTreeMap::new();
    for b in &batches {
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        for id in ids.values() {
            *counts.entry(*id).or_insert(0) += 1;
        }
    }
    counts
}

/// The data files the latest snapshot references, by path.
async fn referenced_files(t: &Table) -> BTreeSet<String> {
    let snap = t.snapshot().await.unwrap();
    snap.files().iter().map(|a| a.path.clone()).collect()
}

/// Data files in the table folder (not under `_delta_log`), by name.
async fn data_files(t: &Table) -> BTreeSet<String> {
    t.store()
        .list_all()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| !m.location.as_ref().contains("_delta_log"))
        .filter(|m| !m.location.as_ref().contains("/_"))
        .filter_map(|m| t.store().relative(&m.location))
        .filter(|r| !r.starts_with('_'))
        .collect()
}

/// VACUUM at zero retention, then checks that exactly the referenced data files remain
/// (listed through the store, and on local disk also walked); the files it deleted.
async fn vacuum_leaves_only_referenced_files(t: &Table, uri: &str) -> usize {
    let result = t
        .vacuum()
        .with_retention_hours(Some(0.0))
        .with_force(true)
        .execute()
        .await
        .unwrap();
    let referenced = referenced_files(t).await;
    assert_eq!(
        data_files(t).await,
        referenced,
        "{uri}: after VACUUM only referenced data files remain ({} deleted)",
        result.files_deleted
    );
    if t.store().is_local() {
        let dir = std::path::PathBuf::from(uri);
        let mut on_disk = Vec::new();
        walk_files(&dir, &dir, &mut on_disk);
        // A put killed midway leaves its staging file (`<name>#<n>`: object_store's
        // local store writes there, then renames); listings skip those, VACUUM finds them.
        let on_disk: BTreeSet<String> = on_disk.into_iter().collect();
        assert_eq!(on_disk, referenced, "{uri}: files on disk after VACUUM");
    }
    eprintln!(
        "{uri}: VACUUM deleted {} orphaned files",
        result.files_deleted
    );
    result.files_deleted
}

/// Every file under `dir` outside `_`-folders (the log, leases), relative to `root`.
fn walk_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() {
            if !name.starts_with('_') {
                walk_files(root, &p, out);
            }
        } else {
            let rel = p.strip_prefix(root).unwrap();
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

fn csv(dir: &std::path::Path, write: i64) -> std::path::PathBuf {
    let path = dir.join(format!("w{write}.csv"));
    let mut text = String::from("id,name\n");
    for r in 0..ROWS {
        text.push_str(&format!("{},w{write}\n", write * 100 + r));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `rounds` CLI writes against `uri`, killing each after a random delay of up to
/// about one write's duration. Returns (acknowledged, killed).
async fn kill_writers(uri: &str, rounds: i64, seed: u64) -> (usize, usize) {
    let shoal = workspace_bin("shoal-cli", "shoal");
    let dir = tempfile::tempdir().unwrap();
    let run = |write: i64| {
        Command::new(&shoal)
            .args(["write", uri])
            .arg(csv(dir.path(), write))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shoal")
    };
    // The first write creates the table; it also tells how long a write takes.
    let started = Instant::now();
    let out = run(0).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first write also creates the table: later ones are faster, so the estimate
    // follows the writes that complete.
    let mut typical = started.elapsed().as_millis().max(5) as u64;
    let t = Table::at(uri).unwrap();
    let mut rng = Rng::new(seed);
    let mut acked = vec![0i64];
    let (mut killed, mut landed_unacked) = (0, 0);
    for write in 1..=rounds {
        let mut child = run(write);
        let spawned = Instant::now();
        // Anywhere from the start to about the end of a typical write.
        let delay = 1 + rng.below(typical);
        let deadline = Instant::now() + Duration::from_millis(delay);
        let mut status = None;
        while Instant::now() < deadline {
            if let Some(s) = child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match status {
            Some(s) => {
                typical = (typical + spawned.elapsed().as_millis().max(5) as u64) / 2;
                let out = child.wait_with_output().unwrap();
                assert!(s.success(), "{}", String::from_utf8_lossy(&out.stderr));
                acked.push(write);
            }
            None => {
                child.kill().unwrap();
                let s = child.wait().unwrap();
                if s.success() {
                    acked.push(write);
                } else {
                    killed += 1;
                }
            }
        }
        let counts = id_counts(&t).await;
        for w in 0..=write {
            let present: Vec<usize> = (0..ROWS)
                .map(|r| counts.get(&(w * 100 + r)).copied().unwrap_or(0))
                .collect();
            if acked.contains(&w) {
                assert_eq!(
                    present,
                    vec![1; ROWS as usize],
                    "{uri}: acknowledged write {w}"
                );
            } else {
                assert!(
                    present == vec![0; ROWS as usize] || present == vec![1; ROWS as usize],
                    "{uri}: killed write {w} is half-visible or doubled: {present:?}"
                );
                if w == write && present[0] == 1 {
                    landed_unacked += 1;
                }
            }
        }
    }
    eprintln!(
        "{uri}: {rounds} writers, {killed} killed ({landed_unacked} of them had committed), {} acknowledged; typical write {typical} ms",
        acked.len() - 1
    );
    // Orphans (data files of killed writers) go with VACUUM at zero retention.
    vacuum_leaves_only_referenced_files(&t, uri).await;
    (acked.len(), killed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_cli_writers_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let uri = dir.path().join("t").to_str().unwrap().to_string();
    let (_, killed) = kill_writers(&uri, 40, 11).await;
    assert!(killed > 0, "no writer was killed: the delays are too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_cli_writers_on_s3_lose_and_duplicate_nothing() {
    let Some(base) = s3_base("crash tests on S3") else {
        return;
    };
    let (_, killed) = kill_writers(&s3_uri(&base, "crash"), 15, 12).await;
    assert!(killed > 0, "no writer was killed: the delays are too long");
}

// ---------------------------------------------------------------------------------
// The server: `shoal-server` SIGKILLed while concurrent clients append through group
// commit, restarted, killed again. Clients below `IDEMPOTENT_CLIENTS` send application
// transactions (`app_id`/`app_version`) and retry an unanswered request after the
// restart; the others send plain appends, never retried.

/// Rows per request: ids `req * REQ_ROWS ..`, so every row names its request.
const REQ_ROWS: i64 = 4;
const CLIENTS: usize = 4;
const IDEMPOTENT_CLIENTS: usize = 3;

/// A request that got no complete answer: refused, reset, or closed early.
struct NoAnswer {
    /// The request was written, so the server may have received it.
    sent: bool,
}

/// One HTTP/1.1 exchange on a fresh connection: the status and the body, complete
/// (as long as its `Content-Length` says).
fn http(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, String), NoAnswer> {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|_| NoAnswer { sent: false })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let cut = |_| NoAnswer { sent: true };
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(cut)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(cut)?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(NoAnswer { sent: true });
    };
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    match (status, length) {
        (Some(status), Some(n)) if n == body.len() => Ok((status, body.to_string())),
        _ => Err(NoAnswer { sent: true }),
    }
}

/// Starts `shoal-server` on a fresh port and waits until it answers `/healthz`. A port
/// taken meanwhile by another test (`free_port` releases it) means another port.
fn start_server(warehouse: &str, log: &Path) -> (Reaper, u16) {
    for _ in 0..5 {
        let port = free_port();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(workspace_bin("shoal-server", "shoal-server"))
            .args(["--warehouse", warehouse])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn shoal-server");
        let mut reaper = Reaper(Some(child));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = http(port, "GET", "/healthz", "text/plain", b"") {
                return (reaper, port);
            }
            if reaper.0.as_mut().unwrap().try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "shoal-server did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!(
        "shoal-server exited at start-up:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// What the main thread tells a client.
enum Order {
    /// Send requests to the server on this port until it stops answering. With
    /// `fresh: false`, only retry the unanswered request and check the replay.
    Go {
        port: u16,
        fresh: bool,
    },
    Stop,
}

/// What a client saw during one server lifetime.
#[derive(Debug)]
enum Event {
    /// A 200 answer. `retry`: the same request (same application version) sent again
    /// after a restart because its first attempts got no answer.
    Acked {
        req: i64,
        retry: bool,
        already_applied: bool,
    },
    /// An acknowledged request sent again after a restart: it must be a replay.
    Replayed { req: i64, already_applied: bool },
    /// No answer: the server died under it.
    Unacked { req: i64, sent: bool },
    /// Any other answer: a server bug.
    Refused { req: i64, status: u16, body: String },
}

/// Why a client sends a request.
#[derive(Clone, Copy, PartialEq)]
enum Attempt {
    New,
    /// Again, after a restart: its earlier attempts got no answer.
    Retry,
    /// Again, after a restart, though it was acknowledged.
    Replay,
}

/// Counters the main thread watches to time its kills.
#[derive(Default)]
struct Progress {
    acked: AtomicU64,
    latency_us: AtomicU64,
}

fn ndjson_rows(req: i64) -> Vec<u8> {
    (0..REQ_ROWS)
        .map(|j| format!("{{\"id\":{},\"req\":{req}}}\n", req * REQ_ROWS + j))
        .collect::<String>()
        .into_bytes()
}

/// One client: request `k` of client `c` is `req = c * 1_000_000 + k`; an idempotent
/// client sends it as application version `k` of application `client-<c>`.
fn client(
    c: usize,
    orders: mpsc::Receiver<Order>,
    reports: mpsc::Sender<Vec<Event>>,
    progress: Arc<Progress>,
) {
    let idempotent = c < IDEMPOTENT_CLIENTS;
    let base = c as i64 * 1_000_000;
    let mut next = 0i64;
    let mut pending: Option<i64> = None;
    let mut last_acked: Option<i64> = None;
    let post = |port: u16, req: i64| {
        let path = if idempotent {
            format!(
                "/v1/tables/t/append?app_id=client-{c}&app_version={}",
                req - base
            )
        } else {
            "/v1/tables/t/append".to_string()
        };
        let started = Instant::now();
        let answer = http(
            port,
            "POST",
            &path,
            "application/x-ndjson",
            &ndjson_rows(req),
        );
        if let Ok((200, _)) = &answer {
            progress.acked.fetch_add(1, Relaxed);
            progress
                .latency_us
                .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        }
        answer
    };
    while let Ok(Order::Go { port, fresh }) = orders.recv() {
        let mut events = Vec::new();
        // Sends `req`; false when the server stopped answering.
        let send = |req: i64, attempt: Attempt, events: &mut Vec<Event>| match post(port, req) {
            Ok((200, body)) if body.contains("already_applied") => {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let already_applied = v["already_applied"] == true;
                events.push(match attempt {
                    Attempt::Replay => Event::Replayed {
                        req,
                        already_applied,
                    },
                    _ => Event::Acked {
                        req,
                        retry: attempt == Attempt::Retry,
                        already_applied,
                    },
                });
                true
            }
            Ok((status, body)) => {
                events.push(Event::Refused { req, status, body });
                false
            }
            Err(NoAnswer { sent }) => {
                if attempt != Attempt::Replay {
                    events.push(Event::Unacked { req, sent });
                }
                false
            }
        };
        'lifetime: {
            if let Some(req) = pending {
                if !send(req, Attempt::Retry, &mut events) {
                    break 'lifetime;
                }
                pending = None;
                last_acked = Some(req);
            }
            if let Some(req) = last_acked.filter(|_| idempotent) {
                if !send(req, Attempt::Replay, &mut events) {
                    break 'lifetime;
                }
            }
            if !fresh {
                break 'lifetime;
            }
            loop {
                let req = base + next;
                next += 1;
                if !send(req, Attempt::New, &mut events) {
                    if idempotent {
                        pending = Some(req);
                    }
                    break 'lifetime;
                }
                last_acked = Some(req);
            }
        }
        if reports.send(events).is_err() {
            return;
        }
    }
}

/// What the test knows about every request sent so far.
#[derive(Default)]
struct Ledger {
    acked: BTreeSet<i64>,
    /// Unanswered requests, with whether they were present at the last check.
    unacked: BTreeMap<i64, Option<bool>>,
    /// Every request that once got no answer.
    ever_unacked: BTreeSet<i64>,
    /// Unanswered requests found committed after a kill.
    landed_unacked: BTreeSet<i64>,
    /// On a remote store a write the server sent just before it died may still take
    /// effect after the kill (the store finishes the request): an unanswered request
    /// may then appear later than the check after the kill. Never on local disk.
    late_landing: bool,
    /// Unanswered requests that landed after the check that followed their kill.
    landed_late: BTreeSet<i64>,
    retries_applied: usize,
    retries_replayed: usize,
    replays: usize,
}

impl Ledger {
    /// Takes in one client's events of one server lifetime; true when a request was
    /// in flight when the server died.
    fn record(&mut self, events: Vec<Event>) -> bool {
        let mut mid_request = false;
        for e in events {
            match e {
                Event::Acked {
                    req,
                    retry,
                    already_applied,
                } => {
                    if retry {
                        // Applied when it had not landed, a replay when it had (or,
                        // on a remote store, when it landed since the check).
                        let before = self.unacked.get(&req).copied().flatten();
                        match (already_applied, before) {
                            (false, Some(false)) => self.retries_applied += 1,
                            (true, Some(true)) => self.retries_replayed += 1,
                            (true, Some(false)) if self.late_landing => {
                                self.retries_replayed += 1;
                                self.landed_late.insert(req);
                            }
                            _ => panic!(
                                "request {req} retried after a restart: already_applied = \
                                 {already_applied}, yet present after the kill: {before:?}"
                            ),
                        }
                    } else {
                        assert!(!already_applied, "a new request {req} is no replay");
                    }
                    self.unacked.remove(&req);
                    self.acked.insert(req);
                }
                Event::Replayed {
                    req,
                    already_applied,
                } => {
                    assert!(
                        already_applied,
                        "acknowledged request {req} sent again after a restart is a replay"
                    );
                    self.replays += 1;
                }
                Event::Unacked { req, sent } => {
                    mid_request |= sent;
                    self.ever_unacked.insert(req);
                    self.unacked.entry(req).or_insert(None);
                }
                Event::Refused { req, status, body } => {
                    panic!("request {req}: the server answered {status}: {body}")
                }
            }
        }
        mid_request
    }

    /// Checks the table against the ledger: every acknowledged request present exactly
    /// once, every unanswered one whole or absent (and a plain one, never retried,
    /// stays as the kill left it), no row of a request never sent.
    fn check(&mut self, counts: &BTreeMap<i64, usize>, label: &str) {
        let mut present: BTreeMap<i64, i64> = BTreeMap::new();
        for (id, n) in counts {
            assert_eq!(*n, 1, "{label}: row {id} appears {n} times");
            *present.entry(id.div_euclid(REQ_ROWS)).or_insert(0) += 1;
        }
        for (req, rows) in &present {
            assert!(
                self.acked.contains(req) || self.unacked.contains_key(req),
                "{label}: rows of request {req}, never sent"
            );
            assert_eq!(*rows, REQ_ROWS, "{label}: request {req} is half-visible");
        }
        let lost: Vec<&i64> = self
            .acked
            .iter()
            .filter(|r| !present.contains_key(r))
            .collect();
        assert!(
            lost.is_empty(),
            "{label}: acknowledged requests lost: {lost:?}"
        );
        for (req, was) in self.unacked.iter_mut() {
            let now = present.contains_key(req);
            // A plain request is never sent again: only a late landing may change it.
            let plain = (req / 1_000_000) as usize >= IDEMPOTENT_CLIENTS;
            match (*was, now) {
                (Some(true), false) => panic!("{label}: committed request {req} vanished"),
                (Some(false), true) if plain && self.late_landing => {
                    self.landed_late.insert(*req);
                }
                (Some(false), true) if plain => {
                    panic!("{label}: unanswered plain request {req} appeared after the check")
                }
                _ => {}
            }
            *was = Some(now);
            if now {
                self.landed_unacked.insert(*req);
            }
        }
    }
}

/// Runs the server over `warehouse` for at least `min_rounds` lifetimes, each ended by
/// SIGKILL a random time after the clients saw progress, until `min_mid_request` kills
/// landed with a request in flight.
async fn kill_servers(warehouse: &str, min_rounds: usize, min_mid_request: usize, seed: u64) {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let (mut server, port) = start_server(warehouse, &log);
    let (status, v) = http(
        port,
        "PUT",
        "/v1/tables/t",
        "application/json",
        br#"{"schema": "id long not null, req long not null"}"#,
    )
    .unwrap_or_else(|_| panic!("no answer to create"));
    assert_eq!(status, 201, "{v}");
    let table_uri = format!("{}/t", warehouse.trim_end_matches('/'));
    let t = Table::at(&table_uri).unwrap();

    let progress = Arc::new(Progress::default());
    let (report_tx, reports) = mpsc::channel();
    let mut orders = Vec::new();
    let mut threads = Vec::new();
    for c in 0..CLIENTS {
        let (tx, rx) = mpsc::channel();
        orders.push(tx);
        let (report_tx, progress) = (report_tx.clone(), progress.clone());
        threads.push(std::thread::spawn(move || {
            client(c, rx, report_tx, progress)
        }));
    }
    let collect = |ledger: &mut Ledger| {
        let mut mid_request = false;
        for _ in 0..CLIENTS {
            let events = reports
                .recv_timeout(Duration::from_secs(180))
                .expect("every client reports after the kill");
            mid_request |= ledger.record(events);
        }
        mid_request
    };

    let mut rng = Rng::new(seed);
    let mut ledger = Ledger {
        late_landing: !t.store().is_local(),
        ..Ledger::default()
    };
    let (mut rounds, mut mid_request_kills, mut kills_leaving_orphans) = (0, 0, 0);
    let mut orphans = 0;
    // Kills land a random time, up to about two requests' latency (as the clients last
    // saw it), after some progress in the server's lifetime.
    let mut window_us: u64 = 20_000;
    let mut port = port;
    while rounds < min_rounds || mid_request_kills < min_mid_request {
        assert!(
            rounds < min_rounds * 4,
            "{warehouse}: only {mid_request_kills} of {rounds} kills landed mid-request"
        );
        if rounds > 0 {
            (server, port) = start_server(warehouse, &log);
        }
        let (acked_before, latency_before) = (
            progress.acked.load(Relaxed),
            progress.latency_us.load(Relaxed),
        );
        for o in &orders {
            o.send(Order::Go { port, fresh: true }).unwrap();
        }
        // Some progress (at least one answer, up to a few group commits), then a random
        // delay.
        let wanted = acked_before + 1 + rng.below(2 * CLIENTS as u64);
        let deadline = Instant::now() + Duration::from_secs(120);
        while progress.acked.load(Relaxed) < wanted {
            assert!(
                Instant::now() < deadline,
                "{warehouse}: no request was answered"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.below(window_us)));
        let mut child = server.0.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        rounds += 1;
        if collect(&mut ledger) {
            mid_request_kills += 1;
        }
        let answered = progress.acked.load(Relaxed) - acked_before;
        let spent = progress.latency_us.load(Relaxed) - latency_before;
        if let Some(mean) = spent.checked_div(answered) {
            window_us = (2 * mean).clamp(1_000, 2_000_000);
        }
        ledger.check(
            &id_counts(&t).await,
            &format!("{warehouse} after kill {rounds}"),
        );
        let referenced = referenced_files(&t).await;
        let unreferenced = data_files(&t).await.difference(&referenced).count();
        if unreferenced > orphans {
            kills_leaving_orphans += 1;
        }
        orphans = unreferenced;
    }

    // A last lifetime: idempotent clients retry what is still unanswered, then stop.
    let (mut server, port) = start_server(warehouse, &log);
    for o in &orders {
        o.send(Order::Go { port, fresh: false }).unwrap();
    }
    collect(&mut ledger);
    for o in &orders {
        let _ = o.send(Order::Stop);
    }
    for th in threads {
        th.join().unwrap();
    }
    let mut child = server.0.take().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    ledger.check(&id_counts(&t).await, &format!("{warehouse} at the end"));
    let stranded: Vec<&i64> = ledger
        .unacked
        .keys()
        .filter(|r| ((*r / 1_000_000) as usize) < IDEMPOTENT_CLIENTS)
        .collect();
    assert!(
        stranded.is_empty(),
        "retried requests still unanswered: {stranded:?}"
    );
    let history = t.history(None).await.unwrap();
    let commits = history.len() - 1;

    // VACUUM at zero retention leaves exactly the referenced data files.
    let rows_before = id_counts(&t).await;
    let vacuumed = vacuum_leaves_only_referenced_files(&t, &table_uri).await;
    assert_eq!(id_counts(&t).await, rows_before, "VACUUM changes no row");
    let landed = ledger.landed_unacked.union(&ledger.landed_late).count();
    eprintln!(
        "{warehouse}: {rounds} rounds, {mid_request_kills} kills mid-request ({kills_leaving_orphans} left \
         orphaned files), {} acknowledged requests in {commits} commits, {} unacknowledged of which \
         {landed} landed ({} only after the check that followed the kill), {} retries replayed, {} \
         retries applied, {} replays of acknowledged requests, lost 0, duplicated 0; VACUUM deleted {} \
         orphaned files",
        ledger.acked.len(),
        ledger.ever_unacked.len(),
        ledger.landed_late.len(),
        ledger.retries_replayed,
        ledger.retries_applied,
        ledger.replays,
        vacuumed,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_server_loses_and_duplicates_no_acknowledged_append() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("wh").to_str().unwrap().to_string();
    kill_servers(&warehouse, 30, 20, 21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_server_on_s3_loses_and_duplicates_no_acknowledged_append() {
    let Some(base) = s3_base("server crash tests on S3") else {
        return;
    };
    kill_servers(&s3_uri(&base, "server-crash"), 12, 8, 22).await;
}
