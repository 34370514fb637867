//! The binary itself: production refuses unsafe configuration, and with
//! nothing configured it serves on an embedded development database.

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_mobile-backend");

/// A command with none of the service's variables inherited, run in an
/// empty folder (so no `.env` is picked up).
fn clean_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn production_with_nothing_set_exits_non_zero_naming_each_missing_setting() {
    let dir = tempfile::tempdir().unwrap();
    let out = clean_command(dir.path())
        .env("APP_ENV", "production")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        "DATABASE_URL",
        "PUBLIC_BASE_URL",
        "DATA_KEYS",
        "BLIND_INDEX_KEY",
        "CODE_HMAC_KEY",
        "MAIL_TRANSPORT",
    ] {
        assert!(stderr.contains(name), "{name} missing from:\n{stderr}");
    }
    assert!(!dir.path().join("dev-keys.json").exists());
}

#[test]
fn production_never_echoes_a_secret_it_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let out = clean_command(dir.path())
        .env("APP_ENV", "production")
        .env("DATA_KEYS", "1:dG9vLXNob3J0LWJ1dC1zZWNyZXQ=")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("DATA_KEYS"));
    assert!(!all.contains("dG9vLXNob3J0LWJ1dC1zZWNyZXQ"));
}

#[test]
fn keys_generate_prints_keys_that_production_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = clean_command(dir.path())
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let vars: std::collections::HashMap<&str, &str> =
        stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let signing = clean_command(dir.path())
        .args(["keys", "generate-signing"])
        .output()
        .unwrap();
    assert!(signing.status.success());
    let signing_pem = String::from_utf8(signing.stdout).unwrap();
    assert!(signing_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let config = mobile_backend::config::Config::from_lookup(|k| {
        match k {
            "APP_ENV" => Some("production"),
            "DATABASE_URL" => Some("postgres://db.internal/app"),
            "PUBLIC_BASE_URL" => Some("https://api.example.com"),
            "MAIL_TRANSPORT" => Some("smtps://mail.example.com"),
            "MAIL_FROM" => Some("Example <no-reply@example.com>"),
            "SIGNING_KEYS" => Some(signing_pem.as_str()),
            other => vars.get(other).copied(),
        }
        .map(str::to_owned)
    });
    assert!(config.is_ok(), "{:?}", config.err());
    // A new deployment starts with a pepper, key 1 current.
    let pepper = config.unwrap().keys.password_pepper_keys;
    assert_eq!(pepper.map(|p| p.current_id()), Some(Some(1)));
    // Two runs never print the same keys.
    let again = clean_command(dir.path())
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8(again.stdout).unwrap(), stdout);
}

#[tokio::test]
async fn with_nothing_configured_it_serves_on_an_embedded_database_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // The cluster may run as `postgres` when tests run as root.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let port = free_port();
    let mut child = tokio::process::Command::from({
        let mut c = clean_command(dir.path());
        c.env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    })
    .kill_on_drop(true)
    .spawn()
    .unwrap();

    let client = reqwest::Client::new();
    let mut healthy = false;
    for _ in 0..300 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status() == 200 {
                healthy = true;
                break;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited early with {status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(healthy, "never became ready");
    assert_eq!(
        client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        dir.path().join(".data/dev-keys.json").exists(),
        "development keys generated"
    );
    assert!(
        dir.path().join(".data/postgres/PG_VERSION").exists(),
        "project-local cluster"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !dir.path().join(".data/postgres/postmaster.pid").exists(),
        "the embedded database was stopped"
    );
}
