//! Password hashing holds fixed memory (#14): each hashing thread reuses
//! one argon2 buffer, so a run of hashes leaves the process's resident
//! memory within `threads × ARGON2_MEMORY_KIB` (plus a small constant) of
//! where it started, however many hashes run. Its own test binary: the
//! measurement is of this process, and nothing else may run in it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mobile_backend::{accounts::password::PasswordHasher, config::Argon2Params};
use secrecy::SecretString;

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_hashes_leave_memory_within_one_buffer_per_thread() {
    let params = Argon2Params::default();
    let threads = 2;
    let hasher = PasswordHasher::new(params.clone(), None, threads, 256).unwrap();
    let start = rss_kib();
    let password = SecretString::from("tulip-orbit-9-canyon".to_owned());
    let stored = hasher.hash(&password).await.unwrap();
    // Sign-ins and registrations as a flood brings them: many at once,
    // right and wrong passwords, unknown accounts.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let hasher = hasher.clone();
        let password = password.clone();
        let stored = stored.clone();
        tasks.spawn(async move {
            match i % 3 {
                0 => assert!(hasher.verify(&password, Some(&stored)).await.unwrap().ok),
                1 => assert!(!hasher.verify(&password, None).await.unwrap().ok),
                _ => drop(hasher.hash(&password).await.unwrap()),
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let grown = rss_kib().saturating_sub(start);
    let bound = threads as u64 * u64::from(params.memory_kib) + 8 * 1024;
    println!("RSS grew by {grown} KiB over 101 hashes; bound {bound} KiB");
    assert!(
        grown <= bound,
        "RSS grew by {grown} KiB, more than {threads} × {} KiB + 8 MiB",
        params.memory_kib
    );
}
