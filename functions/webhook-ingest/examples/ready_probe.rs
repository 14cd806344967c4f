//! Benchmark: time from exec of the release binary to its first
//! `GET /ready` 200, over N runs. The child inherits this process's
//! environment (PORT, PATCHPANDA_HOME, ...), and is killed after each run.
//! Usage: ready_probe BINARY PORT RUNS

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [binary, port, runs] = args.as_slice() else {
        eprintln!("usage: ready_probe BINARY PORT RUNS");
        std::process::exit(2);
    };
    let port: u16 = port.parse().unwrap_or(18080);
    let runs: usize = runs.parse().unwrap_or(20);
    let mut times = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let mut child = match Command::new(binary)
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ready_probe: cannot start {binary}: {e}");
                std::process::exit(1);
            }
        };
        let ready = loop {
            if ready(port) {
                break Some(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(10) {
                break None;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let _ = child.kill();
        let _ = child.wait();
        match ready {
            Some(t) => times.push(t),
            None => {
                eprintln!("ready_probe: not ready within 10 s");
                std::process::exit(1);
            }
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "exec->ready over {runs} runs: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
}

fn ready(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}
