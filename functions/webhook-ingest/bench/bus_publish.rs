//! Benchmark of the local bus alone: `CONCURRENCY` tasks publish 8 KiB
//! messages for `SECONDS`, each waiting for its durable acknowledgement
//! before the next, as webhook-ingest's requests do. With `DISPATCH=1` a
//! subscription and a running dispatcher push every message to a local
//! endpoint that answers 204, so publishes compete with claims and acks
//! for the database (the dispatcher on its own `LocalBus` of the same home,
//! as in `patchpanda dev`). Prints one line: messages/s, publish p50/p99/max,
//! and how many were delivered.
//! Usage: bus_publish [DIR] (default: a fresh temporary directory).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use patchpanda_shared::auth::local::LocalIssuer;
use patchpanda_shared::bus::local::{Dispatcher, LocalBus, Subscription};
use patchpanda_shared::bus::{Bus, Message};
use patchpanda_shared::local::Home;

const TOPIC: &str = "bench-events";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let concurrency: usize = env_or("CONCURRENCY", 32);
    let seconds: u64 = env_or("SECONDS", 5);
    let dispatch = env_or::<u8>("DISPATCH", 0) == 1;
    let size: usize = env_or("SIZE", 8 * 1024);
    let tmp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let home = Home::open(&dir)?;
    let bus = Arc::new(LocalBus::open(&home)?);

    let delivered = Arc::new(AtomicUsize::new(0));
    let mut stop_dispatch = None;
    if dispatch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/push", listener.local_addr()?);
        let count = delivered.clone();
        let app = axum::Router::new().route(
            "/push",
            post(move || {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::Relaxed);
                    StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        bus.subscribe(Subscription::new("bench-push", TOPIC, &url))?;
        let issuer = Arc::new(LocalIssuer::open_or_create(&dir)?);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // Its own bus on the same home, as `patchpanda dev` runs it next to
        // the functions' buses.
        let dispatch_bus = Arc::new(LocalBus::open(&home)?);
        let d = Dispatcher::new(dispatch_bus, issuer);
        stop_dispatch = Some((
            tx,
            tokio::spawn(d.run(async move {
                let _ = rx.await;
            })),
        ));
    }

    let body = bytes::Bytes::from(vec![b'x'; size]);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers = (0..concurrency).map(|_| {
        let bus = bus.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                bus.publish(TOPIC, Message::new(body.clone()).attribute("k", "v"))
                    .await
                    .expect("publish");
                latencies.push(t.elapsed());
            }
            latencies
        })
    });
    let mut all = Vec::new();
    for w in futures::future::join_all(workers).await {
        all.extend(w?);
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    if let Some((tx, handle)) = stop_dispatch {
        let _ = tx.send(());
        let _ = handle.await;
    }
    println!(
        "bus_publish c={concurrency} dispatch={dispatch}: {:.0} msg/s ({} in {:.1}s), publish p50 {:.2} ms p99 {:.2} ms max {:.2} ms, delivered {}",
        all.len() as f64 / elapsed.as_secs_f64(),
        all.len(),
        elapsed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        all.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
        delivered.load(Ordering::Relaxed),
    );
    Ok(())
}
