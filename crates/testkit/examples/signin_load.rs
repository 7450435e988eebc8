//! Benchmark: latency of ordinary authenticated requests while 20 password sign-ins per
//! second are in flight, against the same requests with no sign-ins, in one run.
//!
//! Argon2id runs on a bounded blocking pool, so a sign-in storm should queue behind itself
//! instead of stalling other requests. Phases alternate (quiet, loaded, quiet, loaded) so
//! drift on a shared machine hits both sides alike.
//!
//! Run: `cargo run --release -p telesafe-testkit --example signin_load [-- SECONDS_PER_PHASE]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark harness")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use telesafe_core::SystemClock;
use telesafe_testkit::{DbBackend, start};

const READERS: usize = 4;
const SIGNINS_PER_SEC: u64 = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let s = Arc::new(start(DbBackend::Sqlite, Arc::new(SystemClock)).await.expect("server"));
    let reader = s.signed_in("ana.lopez@demo.telesafe.test").await;
    let mut quiet = Vec::new();
    let mut loaded = Vec::new();
    let mut signin_lat = Vec::new();
    let mut signins = 0usize;
    for phase in 0..4 {
        let under_load = phase % 2 == 1;
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = Vec::new();
        for _ in 0..READERS {
            let (c, url, stop) = (reader.clone(), s.url("/api/v1/me"), stop.clone());
            readers.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = c.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await;
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let generator = under_load.then(|| {
            let (s, stop) = (s.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / SIGNINS_PER_SEC));
                let mut inflight = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let (c, url, origin, pw) = (
                        s.client(),
                        s.url("/signin"),
                        s.base.clone(),
                        s.password.expose_secret().to_owned(),
                    );
                    inflight.push(tokio::spawn(async move {
                        let t = Instant::now();
                        let r = c
                            .post(&url)
                            .header("origin", &origin)
                            .form(&[
                                ("organisation", "demo"),
                                ("email", "walter.brown@demo.telesafe.test"),
                                ("password", &pw),
                            ])
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 303);
                        t.elapsed()
                    }));
                }
                let mut lat = Vec::new();
                for h in inflight {
                    lat.push(h.await.unwrap());
                }
                lat
            })
        });
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            let lat = r.await.unwrap();
            if under_load { loaded.extend(lat) } else { quiet.extend(lat) }
        }
        if let Some(g) = generator {
            let lat = g.await.unwrap();
            signins += lat.len();
            signin_lat.extend(lat);
        }
    }
    for v in [&mut quiet, &mut loaded, &mut signin_lat] {
        v.sort();
    }
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "machine: {workers} cores; {READERS} readers of GET /api/v1/me (session + account lookup, SQLite); {secs} s per phase, 2 phases each"
    );
    println!("| phase | requests | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, v) in [("no sign-ins", &quiet), ("20 sign-ins/s", &loaded)] {
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            v.len(),
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap_or(&Duration::ZERO))
        );
    }
    println!(
        "| sign-ins themselves | {signins} | {:.1} | {:.1} | {:.1} |",
        ms(percentile(&signin_lat, 0.5)),
        ms(percentile(&signin_lat, 0.99)),
        ms(*signin_lat.last().unwrap_or(&Duration::ZERO))
    );
    let ratio = ms(percentile(&loaded, 0.99)) / ms(percentile(&quiet, 0.99)).max(1e-9);
    println!("p99 ratio (loaded / quiet): {ratio:.2}");
}
