//! Losing Redis costs reads nothing: the faults are made for real against
//! a private `redis-server` on a random port (the shared one on 6379 is
//! never touched), killed for "down" and replaced by a listener that
//! accepts and never answers for "hung". Reads keep being served, the
//! credential routes fail closed (503 `rate_limit_unavailable`), the outage
//! is logged once (not once per request) and exported, and once Redis is
//! back the background probe closes the breaker so the next sign-in
//! succeeds at its first try.
//!
//! A separate test binary because the tracing subscriber and the metrics
//! recorder are process-wide: the tests here run one at a time and count
//! log lines and gauges that nothing else writes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use helpers::{problem, TestApp, TestUser, STRONG_PASSWORD};
use std::{
    io::Write,
    net::{SocketAddr, TcpListener as StdListener},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
    /// Lines containing `needle`.
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

/// The process-wide log buffer (installed once) and a lock that runs the
/// tests one at a time.
fn logs() -> &'static (Buffer, tokio::sync::Mutex<()>) {
    static LOGS: OnceLock<(Buffer, tokio::sync::Mutex<()>)> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        (buffer, tokio::sync::Mutex::new(()))
    })
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a Redis on `port` answers `PING`.
async fn pong(port: u16) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A private `redis-server` on `port`, ready when returned.
async fn start_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server on PATH");
    for _ in 0..200 {
        if pong(port).await {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not start on {port}");
}

async fn stop_redis(mut child: Child) {
    child.kill().await.unwrap();
    child.wait().await.unwrap();
}

/// A "hung" Redis: accepts connections and never answers. Dropping the
/// handle closes the listener and every accepted connection.
fn hung_redis(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = StdListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    })
}

/// The app on `port`, with a test-friendly deadline (a debug build on a
/// busy machine) and a short probe interval.
async fn app_on(port: u16) -> TestApp {
    TestApp::builder()
        .env("REDIS_URL", &format!("redis://127.0.0.1:{port}"))
        .env(
            "REDIS_KEY_PREFIX",
            &format!("test-faults-{}", uuid::Uuid::new_v4().simple()),
        )
        .env("REDIS_TIMEOUT_MS", "500")
        .env("REDIS_PROBE_INTERVAL_MS", "100")
        .spawn()
        .await
}

/// The value of a metric line that starts with `series`, if any.
async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    app.metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

const REDIS_UP: &str = "dependency_up{dependency=\"redis\"}";
const BREAKER_OPEN: &str = "circuit_breaker_open{dependency=\"redis\"}";

/// While Redis is unavailable: reads served, credentials 503, logged once.
async fn assert_degraded(app: &TestApp, user: &TestUser, email: &str, logs: &Buffer) {
    for i in 0..40 {
        let r = app.get_auth("/v1/me", user.access()).await;
        assert_eq!(r.status(), 200, "read {i} served from the in-process store");
        assert!(r.headers().contains_key("ratelimit"));
    }
    for _ in 0..3 {
        let r = app.login(email, STRONG_PASSWORD).await;
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(problem(r).await["code"], "rate_limit_unavailable");
    }
    assert!(app.state.limiter.redis_unavailable() == Some(true));
    assert_eq!(
        logs.count("redis unavailable"),
        1,
        "one line for the outage, not one per request"
    );
    assert_eq!(logs.count("rate-limit store unavailable"), 0);
    assert_eq!(metric(app, REDIS_UP).await, Some(0.0));
    assert_eq!(metric(app, BREAKER_OPEN).await, Some(1.0));
}

/// After Redis is back: the probe closes the breaker (polled through the
/// limiter, no wall-clock assertion) and the next sign-in succeeds at once.
async fn assert_recovered(app: &TestApp, email: &str, logs: &Buffer) {
    for _ in 0..600 {
        if app.state.limiter.redis_unavailable() == Some(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.state.limiter.redis_unavailable(), Some(false));
    let r = app.login(email, STRONG_PASSWORD).await;
    assert_eq!(r.status(), 200, "the first sign-in after recovery");
    assert_eq!(logs.count("redis available again"), 1);
    assert_eq!(logs.count("redis unavailable"), 1);
    assert_eq!(metric(app, REDIS_UP).await, Some(1.0));
    assert_eq!(metric(app, BREAKER_OPEN).await, Some(0.0));
}

#[tokio::test]
async fn with_redis_killed_reads_are_served_credentials_fail_closed_and_sign_in_works_once_it_returns(
) {
    let (logs, lock) = logs();
    let _one_at_a_time = lock.lock().await;
    let port = free_port();
    let redis = start_redis(port).await;
    let app = app_on(port).await;
    let email = "down@example.com";
    let user = app.signed_up_user(email).await;
    assert_eq!(app.get_auth("/v1/me", user.access()).await.status(), 200);
    assert_eq!(metric(&app, REDIS_UP).await, Some(1.0));
    logs.clear();

    stop_redis(redis).await;
    assert_degraded(&app, &user, email, logs).await;

    let _redis = start_redis(port).await;
    assert_recovered(&app, email, logs).await;
}

#[tokio::test]
async fn with_redis_hung_reads_are_served_credentials_fail_closed_and_sign_in_works_once_it_returns(
) {
    let (logs, lock) = logs();
    let _one_at_a_time = lock.lock().await;
    let port = free_port();
    let redis = start_redis(port).await;
    let app = app_on(port).await;
    let email = "hung@example.com";
    let user = app.signed_up_user(email).await;
    assert_eq!(app.get_auth("/v1/me", user.access()).await.status(), 200);
    logs.clear();

    // Redis goes away and something that accepts but never answers takes
    // its port: every call would wait for its deadline.
    stop_redis(redis).await;
    let hung = hung_redis(port);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        TcpStream::connect(addr).await.is_ok(),
        "the hung port accepts"
    );
    assert_degraded(&app, &user, email, logs).await;

    hung.abort();
    let _ = hung.await;
    let _redis = start_redis(port).await;
    assert_recovered(&app, email, logs).await;
}
