//! Tests for the argon2id hasher: round trips, parameter upgrades, the
//! dummy hash for unknown accounts, malformed stored hashes and, above all,
//! that the bounded pool sheds load (`Overloaded`) instead of queueing forever.
//! Deterministic: a test hook holds the only slot instead of racing a slow hash.

use super::*;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
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
    PasswordHasher::new(params, None, 2, 4).unwrap()
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

/// An unusable stored hash (corrupt, absurd costs, a pepper key this
/// process lacks) is answered like a wrong password, at the cost of the
/// dummy check: a fast error would confirm that the account exists.
#[tokio::test]
async fn an_unusable_stored_hash_is_a_wrong_password_at_the_usual_cost() {
    let hasher = hasher(FAST);
    for bad in [
        "",
        "not a hash",
        "$argon2id$v=19$m=1024,t=1,p=1",
        "$argon2id$v=19$m=zzz,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
        "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2g",
        // 2 GiB: over the memory cap, refused before argon2 allocates it.
        "$argon2id$v=19$m=2097152,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2doYXNoaGFzaA",
        // Within each cap alone, not together (1 GiB × 64 passes).
        "$argon2id$v=19$m=1048576,t=64,p=1$c2FsdHNhbHQ$aGFzaGhhc2doYXNoaGFzaA",
        // A keyid that is not 4 bytes, and a key this process lacks.
        "$argon2id$v=19$m=1024,t=1,p=1,keyid=AAE$c2FsdHNhbHQ$aGFzaGhhc2doYXNoaGFzaA",
        "$argon2id$v=19$m=1024,t=1,p=1,keyid=AAAAAQ$c2FsdHNhbHQ$aGFzaGhhc2doYXNoaGFzaA",
    ] {
        let before = hasher.work_blocks();
        let result = hasher
            .verify(&secret("tulip-orbit-9-canyon"), Some(bad))
            .await
            .unwrap();
        assert_eq!(
            result,
            Verified {
                ok: false,
                needs_rehash: false
            },
            "{bad}"
        );
        assert_eq!(
            hasher.work_blocks() - before,
            1024,
            "{bad}: the dummy's cost"
        );
    }
}

#[test]
fn the_time_floor_follows_current_checks_but_a_stall_cannot_inflate_it_far() {
    let t = Typical::new();
    let ms = Duration::from_millis;
    t.record(ms(80));
    assert_eq!(t.get(), ms(80));
    t.record(ms(88));
    assert_eq!(t.get(), ms(81));
    // A 10 s stall counts as 4 × the first sample at most.
    let t = Typical::new();
    t.record(ms(80));
    for _ in 0..100 {
        t.record(Duration::from_secs(10));
    }
    assert!(t.get() <= ms(320), "{:?}", t.get());
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
    let hasher = PasswordHasher::new(FAST, None, 1, 0).unwrap();
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
    let hasher = PasswordHasher::new(FAST, None, 1, 1).unwrap();
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
    let hasher = PasswordHasher::new(FAST, None, 1, 1).unwrap();
    let _slot = hasher.occupy_slot().unwrap();
    let password = secret("tulip-orbit-9-canyon");
    let waiting = hasher.hash(&password);
    let timed_out = tokio::time::timeout(Duration::from_millis(20), waiting).await;
    assert!(timed_out.is_err());
    assert_eq!(hasher.queue_depth(), 0);
}

#[test]
fn bad_configuration_is_an_error() {
    assert!(PasswordHasher::new(FAST, None, 0, 1).is_err());
    assert!(PasswordHasher::new(FAST, None, usize::MAX, 1).is_err());
    let tiny = Argon2Params {
        memory_kib: 1,
        iterations: 1,
        parallelism: 1,
    };
    assert!(matches!(
        PasswordHasher::new(tiny, None, 1, 1),
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

fn pepper(spec_keys: &[(u32, u8)], staged: bool) -> PepperKeys {
    use crate::crypto::keyring::{Key, KEY_LEN};
    let spec = spec_keys
        .iter()
        .map(|(id, byte)| format!("{id}:{}", Key::from_bytes([*byte; KEY_LEN]).to_base64()))
        .collect::<Vec<_>>()
        .join(",");
    PepperKeys::parse(&if staged { format!("-,{spec}") } else { spec }).unwrap()
}

fn peppered(params: Argon2Params, keys: &[(u32, u8)]) -> PasswordHasher {
    PasswordHasher::new(params, Some(pepper(keys, false)), 2, 4).unwrap()
}

const PW: &str = "tulip-orbit-9-canyon";

async fn verified(hasher: &PasswordHasher, password: &str, phc: &str) -> Verified {
    hasher.verify(&secret(password), Some(phc)).await.unwrap()
}

#[tokio::test]
async fn a_peppered_hash_names_its_key_and_needs_that_key() {
    let hasher = peppered(FAST, &[(1, 0x11)]);
    let phc = hasher.hash(&secret(PW)).await.unwrap();
    // Key id 1 as 4 bytes big-endian, base64 without padding.
    assert!(
        phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1,keyid=AAAAAQ$"),
        "{phc}"
    );
    assert_eq!(
        verified(&hasher, PW, &phc).await,
        Verified {
            ok: true,
            needs_rehash: false
        }
    );
    assert!(!verified(&hasher, "tulip-orbit-9-canyoN", &phc).await.ok);

    // Someone with the database but not the pepper: argon2 without the
    // secret, or with another key under the same id, never matches even
    // the right password, so offline guessing gets nowhere.
    let parsed = PasswordHash::new(&phc).unwrap();
    assert!(Argon2::default()
        .verify_password(PW.as_bytes(), &parsed)
        .is_err());
    let other_key = peppered(FAST, &[(1, 0x22)]);
    assert!(!verified(&other_key, PW, &phc).await.ok);

    // A process that does not hold key 1 never checks without it: the
    // right password is refused (like a wrong one, at the usual cost).
    let without = hasher_with(None);
    assert!(!verified(&without, PW, &phc).await.ok);
    let only_two = peppered(FAST, &[(2, 0x11)]);
    assert!(!verified(&only_two, PW, &phc).await.ok);
}

fn hasher_with(pepper: Option<PepperKeys>) -> PasswordHasher {
    PasswordHasher::new(FAST, pepper, 2, 4).unwrap()
}

#[tokio::test]
async fn hashes_without_a_pepper_or_under_an_older_key_ask_for_a_rehash() {
    let plain = hasher_with(None).hash(&secret(PW)).await.unwrap();
    let under_one = peppered(FAST, &[(1, 0x11)])
        .hash(&secret(PW))
        .await
        .unwrap();
    let rotated = peppered(FAST, &[(2, 0x22), (1, 0x11)]);
    for phc in [&plain, &under_one] {
        assert_eq!(
            verified(&rotated, PW, phc).await,
            Verified {
                ok: true,
                needs_rehash: true
            },
            "{phc}"
        );
        // No advice for a wrong password.
        assert_eq!(
            verified(&rotated, "nope", phc).await,
            Verified {
                ok: false,
                needs_rehash: false
            }
        );
    }
    let fresh = rotated.hash(&secret(PW)).await.unwrap();
    assert!(fresh.contains(",keyid=AAAAAg$"), "{fresh}");
    assert!(!verified(&rotated, PW, &fresh).await.needs_rehash);

    // Rollout step 1 (key 2 known, key 1 still current): a hash another
    // process already wrote under key 2 verifies and is left alone, and
    // with no key current (`-,1:…`) nothing is re-hashed either way.
    let step_one = peppered(FAST, &[(1, 0x11), (2, 0x22)]);
    assert_eq!(
        verified(&step_one, PW, &fresh).await,
        Verified {
            ok: true,
            needs_rehash: false
        }
    );
    let staged = hasher_with(Some(pepper(&[(1, 0x11)], true)));
    let unpeppered = staged.hash(&secret(PW)).await.unwrap();
    assert!(!unpeppered.contains("keyid"), "{unpeppered}");
    assert!(!verified(&staged, PW, &under_one).await.needs_rehash);
    assert!(!verified(&staged, PW, &plain).await.needs_rehash);
}

/// The heart of the enumeration defence: a wrong password costs the same
/// argon2 work whether the account is unknown (dummy hash), current, or
/// stored with older, cheaper parameters, peppered or not.
#[tokio::test]
async fn every_refusal_costs_the_same_argon2_work() {
    let current = Argon2Params {
        memory_kib: 2048,
        iterations: 2,
        parallelism: 1,
    };
    let hasher = peppered(current.clone(), &[(2, 0x22), (1, 0x11)]);
    let older = [
        Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        Argon2Params {
            memory_kib: 512,
            iterations: 3,
            parallelism: 1,
        },
        Argon2Params {
            memory_kib: 1000,
            iterations: 1,
            parallelism: 2,
        },
        Argon2Params {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        },
    ];
    let mut stored = vec![hasher.hash(&secret(PW)).await.unwrap()];
    for params in older {
        stored.push(hasher_of(params).hash(&secret(PW)).await.unwrap());
    }
    stored.push(
        peppered(FAST, &[(1, 0x11)])
            .hash(&secret(PW))
            .await
            .unwrap(),
    );

    let cost = |before: u64| hasher.work_blocks() - before;
    let before = hasher.work_blocks();
    assert!(!hasher.verify(&secret("wrong"), None).await.unwrap().ok);
    let unknown = cost(before);
    assert_eq!(unknown, 2048 * 2, "the dummy costs the current parameters");
    for phc in &stored {
        let before = hasher.work_blocks();
        assert!(!verified(&hasher, "wrong", phc).await.ok);
        let spent = cost(before);
        // Equal to within one 4-block sync point per filler pass.
        assert!(
            spent <= unknown && unknown - spent < 8,
            "{phc}: {spent} blocks against {unknown} for an unknown account"
        );
    }
}

fn hasher_of(params: Argon2Params) -> PasswordHasher {
    PasswordHasher::new(params, None, 2, 4).unwrap()
}

#[test]
fn the_filler_makes_up_any_shortfall_within_the_memory_of_one_hash() {
    for max_kib in [8_u32, 19_456, 47_104, 65_536] {
        for shortfall in [
            0_u64, 7, 8, 9, 100, 1_000, 19_455, 19_456, 19_457, 38_000, 77_777,
        ] {
            match filler(shortfall, max_kib) {
                None => assert!(shortfall < 8, "{shortfall} {max_kib}"),
                Some(p) => {
                    assert!(p.m_cost() <= max_kib.max(8), "{shortfall} {max_kib}");
                    let done = work(&p);
                    assert!(
                        done <= shortfall && shortfall - done < 8 * u64::from(p.t_cost()),
                        "{shortfall} {max_kib}: {done}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_report_says_which_pepper_key_may_leave() {
    let keys = pepper(&[(2, 0x22), (1, 0x11)], false);
    let usage = vec![
        (PepperUse::None, 3),
        (PepperUse::Key(1), 4),
        (PepperUse::Key(2), 5),
        (PepperUse::Key(3), 1),
    ];
    let text = pepper_report(Some(&keys), &usage).join("\n");
    for line in [
        "current 2, in the ring [2, 1]",
        "no pepper: 3 hashes (no pepper: re-hashed",
        "pepper key 1: 4 hashes (older: re-hashed",
        "pepper key 2: 5 hashes (current)",
        "pepper key 3: 1 hashes (key NOT in PASSWORD_PEPPER_KEYS",
        "pepper key 1: 4 hashes still under it; keep it",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    let text = pepper_report(Some(&keys), &[(PepperUse::Key(2), 5)]).join("\n");
    assert!(
        text.contains("pepper key 1: no hash left under it; it may leave PASSWORD_PEPPER_KEYS"),
        "{text}"
    );
    assert!(pepper_report(None, &[(PepperUse::None, 2)])[0].contains("not set"));
    // Read as verification reads it: parameters in any order, the last
    // keyid of two, and unreadable rows counted apart.
    let salt_hash = "$c2FsdHNhbHQ$aGFzaGhhc2doYXNoaGFzaA";
    assert_eq!(
        pepper_use(&format!(
            "$argon2id$v=19$keyid=AAAAAg,m=1024,t=1,p=1{salt_hash}"
        )),
        PepperUse::Key(2)
    );
    assert_eq!(
        pepper_use(&format!("$argon2id$v=19$m=1024,t=1,p=1{salt_hash}")),
        PepperUse::None
    );
    assert_eq!(pepper_use("not a hash"), PepperUse::Unreadable);
    assert_eq!(
        pepper_use(&format!(
            "$argon2id$v=19$m=1024,t=1,p=1,keyid=AAE{salt_hash}"
        )),
        PepperUse::Unreadable
    );
}

/// Hashes written in the hashing threads' own memory are argon2's standard
/// PHC strings, and hashes argon2 itself wrote (every stored hash from
/// before) verify here.
#[tokio::test]
async fn hashes_are_interchangeable_with_argon2s_own() {
    let hasher = hasher(FAST);
    let ours = hasher.hash(&secret(PW)).await.unwrap();
    let parsed = PasswordHash::new(&ours).unwrap();
    let params = Params::new(1024, 1, 1, None).unwrap();
    let theirs_argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    assert!(theirs_argon2
        .verify_password(PW.as_bytes(), &parsed)
        .is_ok());
    let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
    let theirs = theirs_argon2
        .hash_password(PW.as_bytes(), &salt)
        .unwrap()
        .to_string();
    assert!(verified(&hasher, PW, &theirs).await.ok);
    assert!(!verified(&hasher, "tulip-orbit-9-canyoN", &theirs).await.ok);
    // And an argon2i / older-version hash still verifies (and is stale).
    let old = Argon2::new(
        Algorithm::Argon2i,
        Version::V0x10,
        Params::new(1024, 1, 1, None).unwrap(),
    )
    .hash_password(PW.as_bytes(), &salt)
    .unwrap()
    .to_string();
    assert_eq!(
        verified(&hasher, PW, &old).await,
        Verified {
            ok: true,
            needs_rehash: true
        }
    );
}

/// The hashing threads run `nice` steps below the thread that made the
/// hasher, and the work given to them (hashes and strength checks) runs
/// there, not on an async worker.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn hashing_threads_run_below_the_process_priority() {
    let own = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
    let lowered = PasswordHasher::with_nice(FAST, None, 1, 4, 5).unwrap();
    let (name, nice) = lowered
        .on_hashing_thread(|| {
            let tid = rustix::thread::gettid();
            (
                std::thread::current().name().map(str::to_owned),
                rustix::process::getpriority_process(Some(tid)).unwrap(),
            )
        })
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("password-hash-0"));
    assert_eq!(nice, (own + 5).min(19));
    // 0 leaves them at the process's priority.
    let level = PasswordHasher::with_nice(FAST, None, 1, 4, 0).unwrap();
    let nice = level
        .on_hashing_thread(|| {
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
        })
        .await
        .unwrap();
    assert_eq!(nice, own);
}

/// The strength estimate of a new password runs on a hashing thread (the
/// same bound as hashing), and its answer comes back intact.
#[tokio::test]
async fn the_password_policy_runs_on_a_hashing_thread() {
    let hasher = hasher(FAST);
    let email = "hashing-thread-probe@example.com";
    let (thread, verdict) = hasher
        .on_hashing_thread(move || {
            let thread = std::thread::current().name().map(str::to_owned);
            (
                thread,
                crate::accounts::policy::check("aaaaaaaaaaaaaaaa", email),
            )
        })
        .await
        .unwrap();
    assert!(thread.unwrap().starts_with("password-hash-"));
    assert_eq!(verdict.unwrap_err().code, "password_too_weak");
}
