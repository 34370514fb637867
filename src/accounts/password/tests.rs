//! Tests for the argon2id hasher: round trips, parameter upgrades, the
//! dummy hash for unknown accounts, malformed stored hashes and, above all,
//! that the bounded pool sheds load (`Overloaded`) instead of queueing forever.
//! Deterministic: a test hook holds the only slot instead of racing a slow hash.

use super::*;
use std::future::Future as _;
use std::time::Duration;

/// Small parameters keep the tests fast; production uses the defaults.
const FAST: Argon2Params = Argon2Params {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

fn hasher(params: Argon2Params) -> PasswordHasher {
    PasswordHasher::new(params, 2, 4).unwrap()
}

#[tokio::test]
async fn round_trip_with_owasp_defaults() {
    let hasher = hasher(Argon2Params::default());
    let phc = hasher.hash(&secret("tulip-orbit-9-canyon")).await.unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let verified = hasher
        .verify(&secret("tulip-orbit-9-canyon"), Some(&phc))
        .await
        .unwrap();
    assert_eq!(
        verified,
        Verified {
            ok: true,
            needs_rehash: false
        }
    );
}

#[tokio::test]
async fn salts_differ_and_wrong_password_fails() {
    let hasher = hasher(FAST);
    let a = hasher.hash(&secret("tulip-orbit-9-canyon")).await.unwrap();
    let b = hasher.hash(&secret("tulip-orbit-9-canyon")).await.unwrap();
    assert_ne!(a, b);
    let verified = hasher
        .verify(&secret("tulip-orbit-9-canyoN"), Some(&a))
        .await
        .unwrap();
    assert_eq!(
        verified,
        Verified {
            ok: false,
            needs_rehash: false
        }
    );
}

#[tokio::test]
async fn unknown_account_verifies_against_dummy_and_fails() {
    let hasher = hasher(FAST);
    let verified = hasher
        .verify(&secret("anything at all"), None)
        .await
        .unwrap();
    assert_eq!(
        verified,
        Verified {
            ok: false,
            needs_rehash: false
        }
    );
    // The dummy costs what a real hash costs.
    assert!(hasher
        .inner
        .dummy_phc
        .starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
}

#[tokio::test]
async fn old_params_still_verify_and_ask_for_rehash() {
    let old = hasher(FAST);
    let phc = old.hash(&secret("tulip-orbit-9-canyon")).await.unwrap();
    let raised = hasher(Argon2Params {
        memory_kib: 2048,
        iterations: 2,
        parallelism: 1,
    });
    let verified = raised
        .verify(&secret("tulip-orbit-9-canyon"), Some(&phc))
        .await
        .unwrap();
    assert_eq!(
        verified,
        Verified {
            ok: true,
            needs_rehash: true
        }
    );
    // No rehash advice for a wrong password.
    let wrong = raised.verify(&secret("nope"), Some(&phc)).await.unwrap();
    assert_eq!(
        wrong,
        Verified {
            ok: false,
            needs_rehash: false
        }
    );
}

#[tokio::test]
async fn nfkc_equivalent_passwords_verify() {
    let hasher = hasher(FAST);
    let phc = hasher
        .hash(&secret("caf\u{e9}-orbit-9-canyon"))
        .await
        .unwrap();
    let verified = hasher
        .verify(&secret("cafe\u{301}-orbit-9-canyon"), Some(&phc))
        .await
        .unwrap();
    assert!(verified.ok);
}

#[tokio::test]
async fn malformed_stored_hash_is_internal() {
    let hasher = hasher(FAST);
    for bad in [
        "",
        "not a hash",
        "$argon2id$v=19$m=1024,t=1,p=1",
        "$argon2id$v=19$m=zzz,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$argon2id$v=19$m=2097152,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2doYXNoaGFzaA",
    ] {
        let result = hasher
            .verify(&secret("tulip-orbit-9-canyon"), Some(bad))
            .await;
        assert!(
            matches!(result, Err(HashError::Internal(_))),
            "{bad}: {result:?}"
        );
    }
    // The 2 GiB one is refused by our cap, before argon2 would allocate it.
    let huge = "$argon2id$v=19$m=2097152,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2doYXNoaGFzaA";
    let result = hasher.verify(&secret("x"), Some(huge)).await;
    assert!(format!("{result:?}").contains("out of range"), "{result:?}");
}

#[tokio::test]
async fn overlong_password_is_refused_before_hashing() {
    let hasher = hasher(FAST);
    let too_long = secret(&"a".repeat(policy::MAX_CHARS * 4 + 1));
    assert!(matches!(
        hasher.hash(&too_long).await,
        Err(HashError::TooLong)
    ));
    assert!(matches!(
        hasher.verify(&too_long, None).await,
        Err(HashError::TooLong)
    ));
    // 128 four-byte characters is the longest acceptable password.
    let longest = secret(&"\u{1F600}".repeat(policy::MAX_CHARS));
    assert!(hasher.hash(&longest).await.is_ok());
}

#[tokio::test]
async fn overloaded_when_no_slot_and_no_queue() {
    let hasher = PasswordHasher::new(FAST, 1, 0).unwrap();
    let slot = hasher.occupy_slot().unwrap();
    assert_eq!(hasher.in_flight(), 1);
    let result = hasher.hash(&secret("tulip-orbit-9-canyon")).await;
    assert!(matches!(result, Err(HashError::Overloaded)));
    let result = hasher.verify(&secret("tulip-orbit-9-canyon"), None).await;
    assert!(matches!(result, Err(HashError::Overloaded)));
    drop(slot);
    assert_eq!(hasher.in_flight(), 0);
    assert!(hasher.hash(&secret("tulip-orbit-9-canyon")).await.is_ok());
}

#[tokio::test]
async fn bounded_queue_waits_then_sheds_and_recovers() {
    let hasher = PasswordHasher::new(FAST, 1, 1).unwrap();
    let slot = hasher.occupy_slot().unwrap();
    let queued = tokio::spawn({
        let hasher = hasher.clone();
        async move { hasher.hash(&secret("tulip-orbit-9-canyon")).await }
    });
    tokio::time::timeout(Duration::from_secs(5), async {
        while hasher.queue_depth() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    // The queue is full: the next caller is turned away at once.
    let result = hasher.hash(&secret("tulip-orbit-9-canyon")).await;
    assert!(matches!(result, Err(HashError::Overloaded)));
    drop(slot);
    assert!(queued.await.unwrap().is_ok());
    assert_eq!((hasher.queue_depth(), hasher.in_flight()), (0, 0));
}

#[tokio::test]
async fn abandoned_waiter_leaves_the_queue() {
    let hasher = PasswordHasher::new(FAST, 1, 1).unwrap();
    let _slot = hasher.occupy_slot().unwrap();
    let password = secret("tulip-orbit-9-canyon");
    let waiting = hasher.hash(&password);
    let timed_out = tokio::time::timeout(Duration::from_millis(20), waiting).await;
    assert!(timed_out.is_err());
    assert_eq!(hasher.queue_depth(), 0);
}

#[test]
fn bad_configuration_is_an_error() {
    assert!(PasswordHasher::new(FAST, 0, 1).is_err());
    assert!(PasswordHasher::new(FAST, usize::MAX, 1).is_err());
    let tiny = Argon2Params {
        memory_kib: 1,
        iterations: 1,
        parallelism: 1,
    };
    assert!(matches!(
        PasswordHasher::new(tiny, 1, 1),
        Err(HashError::Internal(_))
    ));
}

#[test]
fn no_runtime_is_an_error_not_a_panic() {
    let hasher = hasher(FAST);
    let password = secret("tulip-orbit-9-canyon");
    let mut future = std::pin::pin!(hasher.hash(&password));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let polled = future.as_mut().poll(&mut cx);
    assert!(matches!(
        polled,
        std::task::Poll::Ready(Err(HashError::Internal(_)))
    ));
}
