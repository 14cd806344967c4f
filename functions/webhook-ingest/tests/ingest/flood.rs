//! Measured by hand, not asserted: peak memory growth and valid-delivery
//! latency while forged 25 MiB bodies flood `/webhook` over real TCP, with
//! the byte budget and without it (a budget too large to bind), and how long
//! slow senders hold a connection. The results go to the README ("Flood and
//! slow-body measurements"). Run alone, so no other test shares the process:
//!
//! ```text
//! cargo test -p webhook-ingest --test ingest flood -- --ignored --nocapture --test-threads=1
//! ```
//!
//! `FLOOD_ONLY_BUDGETED=1` runs the first row only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use patchpanda_shared::github::signature;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webhook_ingest::settings::{ENV_BODY_BUDGET, ENV_BODY_READ_TIMEOUT};

use super::support::*;

const MIB: usize = 1024 * 1024;
const FORGED_SIZE: usize = 25 * MIB;
const CONCURRENT: usize = 16;
const ROUNDS: usize = 3;

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples RSS every 2 ms on its own thread until dropped; `peak` is the max.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// One POST over its own connection; the status, or 0 if the connection
/// was closed before an answer could be read.
async fn post(addr: SocketAddr, head: String, body: Bytes, pace: Option<Duration>) -> u16 {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    let (mut r, mut w) = stream.into_split();
    // The write half is returned, not dropped: dropping it would half-close
    // the connection, which hyper reads as the client going away.
    let writer = tokio::spawn(async move {
        if w.write_all(head.as_bytes()).await.is_err() {
            return w;
        }
        match pace {
            None => {
                let _ = w.write_all(&body).await;
            }
            Some(p) => {
                for b in body.iter() {
                    if w.write_all(&[*b]).await.is_err() {
                        return w;
                    }
                    tokio::time::sleep(p).await;
                }
            }
        }
        w
    });
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !got.windows(2).any(|w| w == b"\r\n") {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    writer.abort();
    let _ = writer.await;
    std::str::from_utf8(&got)
        .ok()
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn head(delivery: &str, len: usize, sig: &str) -> String {
    format!(
        "POST /webhook HTTP/1.1\r\nhost: ingest\r\nx-github-event: push\r\nx-github-delivery: {delivery}\r\ncontent-type: application/json\r\nx-hub-signature-256: {sig}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    )
}

async fn serve(h: &Harness) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = h.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Valid deliveries, one every 20 ms until `stop`; their latencies.
async fn valid_deliveries(addr: SocketAddr, stop: Arc<AtomicBool>) -> Vec<(u16, Duration)> {
    let body = Bytes::from(fixture("push.json"));
    let sig = signature::sign(SECRET.as_bytes(), &body);
    let mut out = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let started = Instant::now();
        let status = post(
            addr,
            head(&format!("valid-{i}"), body.len(), &sig),
            body.clone(),
            None,
        )
        .await;
        out.push((status, started.elapsed()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out
}

fn summary(latencies: &[(u16, Duration)]) -> String {
    let ok = latencies.iter().filter(|(s, _)| *s == 202).count();
    let mut others: std::collections::BTreeMap<u16, usize> = Default::default();
    for (s, _) in latencies.iter().filter(|(s, _)| *s != 202) {
        *others.entry(*s).or_default() += 1;
    }
    let mut ms: Vec<f64> = latencies
        .iter()
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "{ok}/{} accepted (others: {others:?}), latency p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        latencies.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0)
    )
}

async fn flood(label: &str, env: &[(&str, &str)]) {
    let h = Harness::new(&[SECRET], env);
    let addr = serve(&h).await;
    let forged = Bytes::from(vec![b' '; FORGED_SIZE]);
    let sig = format!("sha256={}", "0".repeat(64));
    let valid_stop = Arc::new(AtomicBool::new(false));
    let baseline = rss_kib();
    let sampler = Sampler::start();
    let valid = tokio::spawn(valid_deliveries(addr, valid_stop.clone()));
    let started = Instant::now();
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for round in 0..ROUNDS {
        let posts = (0..CONCURRENT).map(|i| {
            post(
                addr,
                head(&format!("forged-{round}-{i}"), FORGED_SIZE, &sig),
                forged.clone(),
                None,
            )
        });
        for s in futures::future::join_all(posts).await {
            *statuses.entry(s).or_default() += 1;
        }
    }
    let flood_time = started.elapsed();
    valid_stop.store(true, Ordering::Relaxed);
    let valid = valid.await.unwrap();
    let peak = sampler.finish();
    println!(
        "| {label} | {} x {} forged 25 MiB bodies | peak RSS growth {} MiB | forged answered {:?} (0 = closed before an answer) in {:.1} s | valid: {} |",
        ROUNDS,
        CONCURRENT,
        peak.saturating_sub(baseline) / 1024,
        statuses,
        flood_time.as_secs_f64(),
        summary(&valid)
    );
}

async fn slow(label: &str, env: &[(&str, &str)], watch: Duration) {
    let h = Harness::new(&[SECRET], env);
    let addr = serve(&h).await;
    let valid_stop = Arc::new(AtomicBool::new(false));
    let valid = tokio::spawn(valid_deliveries(addr, valid_stop.clone()));
    let sig = format!("sha256={}", "0".repeat(64));
    let started = Instant::now();
    // 200 senders of a 1 KiB body, one byte every 100 ms (100 s each).
    let senders: Vec<_> = (0..200)
        .map(|i| {
            let head = head(&format!("slow-{i}"), 1024, &sig);
            tokio::spawn(async move {
                let s = post(
                    addr,
                    head,
                    Bytes::from(vec![b' '; 1024]),
                    Some(Duration::from_millis(100)),
                )
                .await;
                (s, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(watch).await;
    let mut done = Vec::new();
    for s in senders {
        if s.is_finished() {
            let (status, at) = s.await.unwrap();
            done.push((status, at.duration_since(started)));
        } else {
            s.abort();
        }
    }
    valid_stop.store(true, Ordering::Relaxed);
    let valid = valid.await.unwrap();
    let latest = done.iter().map(|(_, d)| *d).max().unwrap_or_default();
    println!(
        "| {label} | 200 senders, 1 byte / 100 ms | {} of 200 cut off within {} s (answers {:?}, last at {:.1} s) | valid: {} |",
        done.len(),
        watch.as_secs(),
        done.iter()
            .map(|(s, _)| *s)
            .collect::<std::collections::BTreeSet<_>>(),
        latest.as_secs_f64(),
        summary(&valid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, run by hand (see the module doc)"]
async fn flood_measurements() {
    println!("| setting | load | result | | |");
    println!("|---|---|---|---|---|");
    flood("budget 96 MiB (default)", &[]).await;
    if std::env::var("FLOOD_ONLY_BUDGETED").is_ok() {
        return;
    }
    flood("no budget (100 GiB)", &[(ENV_BODY_BUDGET, "100GiB")]).await;
    slow("read deadline 10 s (default)", &[], Duration::from_secs(12)).await;
    slow(
        "no read deadline (1 h)",
        &[(ENV_BODY_READ_TIMEOUT, "1h")],
        Duration::from_secs(12),
    )
    .await;
}
