//! The registry of user-owned tables (`src/accounts/owned.rs`) held
//! against the schema and the API, table by table, so that a new owned
//! resource is checked by adding its registry entry and a seed here, not
//! by writing its own at-rest, export, erasure and BOLA tests:
//!
//! - the schema: every table is registered (or listed as not owned, with a
//!   reason), every column is classified, sealed columns are `bytea`,
//!   foreign keys to `users` cascade as the registry says;
//! - at rest: the values the seeds store are nowhere in clear, every sealed
//!   value opens under its registered binding `(table, column, row id)`,
//!   and two sealed values swapped no longer open, nor does the API serve
//!   them (an opaque 500, never the other row's value);
//! - the export holds every exported table with all its rows;
//! - deleting the account (and the deletion of an unverified one) leaves
//!   no owned row, and erases the registered columns of retained ones;
//! - every route with an id in its path, with every verb, answers another
//!   user's ids exactly like a random id, and changes nothing.

use crate::helpers::{
    contains, dump_everything, next_step, problem, TestApp, TestUser, PROBE_PREFIX,
};
use mobile_backend::{
    accounts::owned::{Class, Erasure, Export, OwnedTable, SealKey, NOT_OWNED, OWNED},
    crypto::{aead, Aad},
    user_keys::UserKey,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    pin::Pin,
};
use uuid::Uuid;

// ---- Seeds: rows in every registered table, through the public API. ----

/// A value a seed stored that must never be found in clear. `column` is
/// the registry column it went to: for a sealed column, some opened value
/// of that column must contain it.
struct Marker {
    table: &'static str,
    column: &'static str,
    value: Vec<u8>,
}

/// A user with everything: the seeds fill it in.
struct Owner {
    user: TestUser,
    /// Unique to this owner, inside every text marker.
    tag: String,
    /// Two digits unique to this owner (phone number, date of birth).
    n: u8,
    totp: Option<Vec<u8>>,
    markers: Vec<Marker>,
}

impl Owner {
    fn mark(&mut self, table: &'static str, column: &'static str, value: impl AsRef<[u8]>) {
        self.markers.push(Marker {
            table,
            column,
            value: value.as_ref().to_vec(),
        });
    }

    fn id(&self) -> Uuid {
        self.user.user_id
    }
}

type SeedFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;
type Seed = for<'a> fn(&'a TestApp, &'a mut Owner) -> SeedFuture<'a>;

/// One seed per registered table, run in this order: each stores rows of
/// its table for the owner through the API, with a marker in every sealed
/// (or indexed) field. A registered table without a seed fails every test
/// of this file: add one here.
const SEEDS: &[(&str, Seed)] = &[
    ("users", seed_users),
    ("user_keys", seed_nothing),
    ("sessions", seed_sessions),
    ("email_codes", seed_email_codes),
    ("devices", seed_devices),
    ("notes", seed_notes),
    ("rate_limit_requests", seed_rate_limit_requests),
    ("rate_limit_refusals", seed_rate_limit_refusals),
    ("mfa_totp", seed_mfa_totp),
    ("recovery_codes", seed_recovery_codes),
    ("mfa_challenges", seed_mfa_challenges),
    ("audit_events", seed_nothing),
    ("security_alerts", seed_nothing),
];

/// Rows made by sign-up or by the other seeds (`user_keys` at sign-up;
/// `audit_events` by every seed; `security_alerts` by the sessions seed's
/// sign-in from a new device).
fn seed_nothing<'a>(_: &'a TestApp, _: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async {})
}

/// The profile and a pending email change (the sign-up email is marked
/// when the owner is made).
fn seed_users<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        let t = o.tag.clone();
        let (name, phone, dob) = (
            format!("{t} Displayname"),
            format!("+4477009007{:02}", o.n),
            format!("19{:02}-07-07", o.n),
        );
        let (line1, city) = (format!("{t} Wallaby Way"), format!("{t}ville"));
        let r = app
            .send_auth(
                Method::PATCH,
                "/v1/me",
                o.user.access(),
                Some(&json!({
                    "display_name": name, "phone": phone, "date_of_birth": dob,
                    "address": {"line1": line1, "city": city, "postal_code": "QX9 9ZZ", "country": "AU"}
                })),
            )
            .await;
        assert_eq!(r.status(), 200, "PATCH /v1/me");
        let pending = format!("{t}.pending@example.com");
        let r = app
            .post_auth(
                "/v1/me/email",
                o.user.access(),
                Some(&json!({"new_email": pending, "current_password": o.user.password})),
            )
            .await;
        assert_eq!(r.status(), 202, "POST /v1/me/email");
        app.state.deferred.idle().await;
        o.mark("users", "display_name_ciphertext", name);
        o.mark("users", "phone_ciphertext", phone);
        o.mark("users", "date_of_birth_ciphertext", dob);
        o.mark("users", "address_ciphertext", line1);
        o.mark("users", "address_ciphertext", city);
        o.mark("users", "pending_email_ciphertext", pending);
    })
}

/// A second session, from a named device with an install id.
fn seed_sessions<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        let install = Uuid::new_v4().to_string();
        let r = app
            .client
            .post(app.url("/v1/auth/login"))
            .header("x-app-install-id", &install)
            .json(&json!({
                "email": o.user.email, "password": o.user.password,
                "device": {"name": "Seed Phone", "platform": "android", "model": "Pixel 9"}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a second sign-in");
        o.mark("sessions", "install_id_index", install);
    })
}

/// A password-reset code.
fn seed_email_codes<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        let r = app
            .post_json("/v1/auth/password/forgot", &json!({"email": o.user.email}))
            .await;
        assert_eq!(r.status(), 202, "forgot password");
        app.state.deferred.idle().await;
    })
}

fn seed_devices<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        for i in 0..2 {
            let token = format!("{}-push-token-{i}", o.tag);
            let r = app
                .post_auth(
                    "/v1/devices",
                    o.user.access(),
                    Some(&json!({"platform": "ios", "push_token": token, "name": "Seed iPhone"})),
                )
                .await;
            assert_eq!(r.status(), 201, "POST /v1/devices");
            o.mark("devices", "push_token_ciphertext", token);
        }
    })
}

fn seed_notes<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        for i in 0..2 {
            let (title, body) = (
                format!("{} note title {i}", o.tag),
                format!("{} note body {i}\nsecond line", o.tag),
            );
            let r = app
                .post_auth(
                    "/v1/notes",
                    o.user.access(),
                    Some(&json!({"title": title, "body": body})),
                )
                .await;
            assert_eq!(r.status(), 201, "POST /v1/notes");
            o.mark("notes", "title_ciphertext", title);
            o.mark("notes", "body_ciphertext", body);
        }
    })
}

/// Two requests for a higher tier, each denied by an administrator with a
/// note, so both sealed columns hold two values of the owner.
fn seed_rate_limit_requests<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        let admin = app
            .staff_user(&format!("{}.decider@example.com", o.tag), "admin")
            .await;
        for i in 0..2 {
            let reason = format!("{} needs more reads {i}", o.tag);
            let r = app
                .post_auth(
                    "/v1/me/rate-limit-requests",
                    o.user.access(),
                    Some(&json!({ "reason": reason })),
                )
                .await;
            assert_eq!(r.status(), 201, "POST /v1/me/rate-limit-requests");
            let id = r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let note = format!("{} staff note {i}", o.tag);
            let r = app
                .post_auth(
                    &format!("/v1/admin/rate-limit-requests/{id}/decision"),
                    admin.access(),
                    Some(&json!({"decision": "deny", "note": note})),
                )
                .await;
            assert_eq!(r.status(), 200, "a decision with a note");
            o.mark("rate_limit_requests", "reason_ciphertext", reason);
            o.mark("rate_limit_requests", "note_ciphertext", note);
        }
    })
}

/// A day with 429s. The rate-limit layer counts a per-user 429 in memory
/// (`state.refusals`) and the background pass writes it; the suite's limits
/// are wide open, so the seed counts one as the layer does and writes it.
fn seed_rate_limit_refusals<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        app.state.refusals.record(o.id());
        mobile_backend::rate_limit::tiers::flush_refusals(&app.state)
            .await
            .unwrap();
    })
}

/// TOTP on (the session becomes aal2), then a replacement authenticator
/// started but not confirmed, so both sealed secrets hold a value.
fn seed_mfa_totp<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        let secret = app.enable_totp(&o.user).await;
        next_step(app);
        let r = app
            .post_auth(
                "/v1/mfa/totp/setup",
                o.user.access(),
                Some(&json!({"current_password": o.user.password, "code": app.totp_code(&secret)})),
            )
            .await;
        assert_eq!(r.status(), 200, "a replacement enrolment");
        let pending = crate::helpers::secret_of(&r.json().await.unwrap());
        o.mark("mfa_totp", "secret_ciphertext", &secret);
        o.mark("mfa_totp", "pending_secret_ciphertext", &pending);
        o.totp = Some(secret);
    })
}

fn seed_recovery_codes<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        next_step(app);
        let secret = o.totp.clone().expect("the mfa_totp seed runs first");
        let r = app
            .post_auth(
                "/v1/mfa/recovery-codes",
                o.user.access(),
                Some(&json!({"code": app.totp_code(&secret)})),
            )
            .await;
        assert_eq!(r.status(), 200, "new recovery codes");
        let body: Value = r.json().await.unwrap();
        let codes = body["recovery_codes"].as_array().expect("recovery_codes");
        for c in codes {
            o.mark("recovery_codes", "code_hash", c.as_str().unwrap());
        }
    })
}

/// A sign-in waiting for its second step.
fn seed_mfa_challenges<'a>(app: &'a TestApp, o: &'a mut Owner) -> SeedFuture<'a> {
    Box::pin(async move {
        let r = app.login(&o.user.email, &o.user.password).await;
        assert_eq!(r.status(), 200, "sign-in with MFA");
        let body: Value = r.json().await.unwrap();
        let token = body["mfa_token"].as_str().expect("an mfa_token").to_owned();
        o.mark("mfa_challenges", "token_hash", token);
    })
}

/// A new verified user, every seed run for them, and a check that the
/// seeds cover the registry and filled every table and sealed column.
async fn owner(app: &TestApp, n: u8) -> Owner {
    let tag = format!("pii{}", &Uuid::new_v4().simple().to_string()[..10]);
    let user = app.signed_up_user(&format!("{tag}.mail@example.com")).await;
    let mut o = Owner {
        user,
        tag,
        n,
        totp: None,
        markers: Vec::new(),
    };
    let email = o.user.email.clone();
    o.mark("users", "email_ciphertext", email);
    let seeded: BTreeSet<&str> = SEEDS.iter().map(|(t, _)| *t).collect();
    let registered: BTreeSet<&str> = OWNED.iter().map(|t| t.table).collect();
    let unseeded: Vec<_> = registered.difference(&seeded).collect();
    assert!(
        unseeded.is_empty(),
        "registered tables without a seed: {unseeded:?}; add one to SEEDS in tests/api/owned.rs"
    );
    let unknown: Vec<_> = seeded.difference(&registered).collect();
    assert!(
        unknown.is_empty(),
        "seeds for tables not in accounts::owned::OWNED: {unknown:?}"
    );
    for (_, seed) in SEEDS {
        seed(app, &mut o).await;
    }
    for t in OWNED {
        let rows = count(app, t, o.id()).await;
        assert!(rows > 0, "the {} seed stored no row for its owner", t.table);
        for (column, ..) in t.sealed() {
            let filled: i64 = sqlx::query_scalar(&format!(
                r#"SELECT count(*) FROM "{}" WHERE "{}" = $1 AND "{column}" IS NOT NULL"#,
                t.table, t.owner
            ))
            .bind(o.id())
            .fetch_one(&app.db)
            .await
            .unwrap();
            assert!(
                filled > 0,
                "the seeds stored no value in the sealed column {}.{column}",
                t.table
            );
        }
    }
    o
}

async fn count(app: &TestApp, t: &OwnedTable, user: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        r#"SELECT count(*) FROM "{}" WHERE "{}" = $1"#,
        t.table, t.owner
    ))
    .bind(user)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// The primary keys (as text) of `user`'s rows of `t`.
async fn keys_of(app: &TestApp, t: &OwnedTable, user: Uuid) -> Vec<String> {
    sqlx::query_scalar(&format!(
        r#"SELECT "{}"::text FROM "{}" WHERE "{}" = $1 ORDER BY 1"#,
        t.primary_key, t.table, t.owner
    ))
    .bind(user)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

// ---- The schema against the registry. ----

#[tokio::test]
async fn every_table_and_column_is_registered_and_the_schema_keeps_the_registry() {
    let app = TestApp::spawn().await;
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text
         FROM information_schema.columns c
         JOIN information_schema.tables t USING (table_schema, table_name)
         WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let mut schema: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (table, column, ty) in columns {
        schema.entry(table).or_default().insert(column, ty);
    }
    assert!(schema.len() >= 15, "{:?}", schema.keys());
    let mut bad = Vec::new();
    for (table, cols) in &schema {
        let owned = OWNED.iter().find(|t| t.table == table.as_str());
        let not_owned = NOT_OWNED.iter().find(|(t, _)| t == table);
        match (owned, not_owned) {
            (None, None) => bad.push(format!(
                "table {table} is in neither OWNED nor NOT_OWNED (src/accounts/owned.rs)"
            )),
            (None, Some(_)) if cols.contains_key("user_id") => bad.push(format!(
                "table {table} has a user_id column: register it in OWNED, not NOT_OWNED"
            )),
            (None, Some(_)) => {}
            (Some(t), _) => {
                for (column, ty) in cols {
                    match t.column(column).map(|c| c.class) {
                        None => bad.push(format!(
                            "{table}.{column} ({ty}) is not classified in the registry"
                        )),
                        Some(Class::Sealed { .. } | Class::BlindIndex { .. })
                            if ty != "bytea" =>
                        {
                            bad.push(format!(
                                "{table}.{column} is registered sealed or indexed but is {ty}, not bytea"
                            ))
                        }
                        Some(_) => {}
                    }
                }
                for c in t.columns {
                    if !cols.contains_key(c.name) {
                        bad.push(format!(
                            "{table}.{} is in the registry but not in the schema",
                            c.name
                        ));
                    }
                }
            }
        }
    }
    for t in OWNED {
        if !schema.contains_key(t.table) {
            bad.push(format!("registered table {} does not exist", t.table));
        }
    }

    // Primary keys as registered.
    let pkeys: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, a.attname::text
         FROM pg_constraint c
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
         WHERE c.contype = 'p' AND c.connamespace = current_schema()::regnamespace",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    for t in OWNED {
        let actual: Vec<&String> = pkeys
            .iter()
            .filter(|(table, _)| table == t.table)
            .map(|(_, c)| c)
            .collect();
        if actual != [t.primary_key] {
            bad.push(format!(
                "{}: primary key is {actual:?}, the registry says {}",
                t.table, t.primary_key
            ));
        }
    }

    // Foreign keys: (table, its columns, referenced table, on-delete action).
    let fkeys: Vec<(String, Vec<String>, String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text,
                array(SELECT a.attname::text FROM pg_attribute a
                      WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)),
                c.confrelid::regclass::text, c.confdeltype::text
         FROM pg_constraint c
         WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    for t in OWNED.iter().filter(|t| t.table != "users") {
        let to_users: Vec<&(String, Vec<String>, String, String)> = fkeys
            .iter()
            .filter(|(from, cols, to, _)| {
                from == t.table && to == "users" && cols == &[t.owner.to_owned()]
            })
            .collect();
        match t.erasure {
            Erasure::Cascade => match to_users.as_slice() {
                [(.., action)] if action == "c" => {}
                [(.., action)] => bad.push(format!(
                    "{}.{} → users is ON DELETE {} but the registry says Cascade: \
                     add ON DELETE CASCADE",
                    t.table,
                    t.owner,
                    on_delete(action)
                )),
                _ => bad.push(format!(
                    "{}.{} has no foreign key to users, but the registry says Cascade",
                    t.table, t.owner
                )),
            },
            Erasure::Retained { .. } if !to_users.is_empty() => bad.push(format!(
                "{} is registered as retained after deletion, but has a foreign key to users",
                t.table
            )),
            _ => {}
        }
    }
    for (from, cols, to, action) in &fkeys {
        if to == "users" {
            let registered = OWNED
                .iter()
                .any(|t| t.table == from.as_str() && cols == &[t.owner.to_owned()]);
            if !registered {
                bad.push(format!(
                    "{from}.{cols:?} references users but is not a registered owner column"
                ));
            }
        }
        // Nothing may hold up the deletion of an owned row.
        if OWNED.iter().any(|t| t.table == to.as_str()) && !matches!(action.as_str(), "c" | "n") {
            bad.push(format!(
                "{from}.{cols:?} → {to} is ON DELETE {}: deleting the account would fail",
                on_delete(action)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "the schema and the registry disagree:\n  {}",
        bad.join("\n  ")
    );
}

fn on_delete(action: &str) -> &'static str {
    match action {
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        "r" => "RESTRICT",
        _ => "NO ACTION",
    }
}

// ---- At rest. ----

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Opens a sealed value of `t.column` for its row with its registered
/// binding and key.
async fn open(
    app: &TestApp,
    t: &OwnedTable,
    aad_column: &str,
    key: SealKey,
    owner: Uuid,
    row_id: Uuid,
    value: &[u8],
) -> Option<Vec<u8>> {
    let aad = Aad::new(t.table, aad_column, row_id);
    match key {
        SealKey::User => {
            let mut conn = app.db.acquire().await.unwrap();
            let user_key = UserKey::load(&mut conn, &app.state.keys.data, owner)
                .await
                .unwrap();
            user_key.open(&aad, value).ok().map(|v| v.to_vec())
        }
        SealKey::Master => aead::open(&app.state.keys.data, &aad, value)
            .ok()
            .map(|v| v.to_vec()),
    }
}

/// One sealed value in place: its row, column and binding.
#[derive(Clone, Debug)]
struct Cell {
    owner: Uuid,
    key: String,
    column: &'static str,
    aad_column: &'static str,
    seal_key: SealKey,
    row_id: Uuid,
    value: Vec<u8>,
}

/// `owner`'s non-null values of the sealed `column` of `t`.
async fn cells(app: &TestApp, t: &OwnedTable, column: &'static str, owner: Uuid) -> Vec<Cell> {
    let Some(Class::Sealed {
        aad_column,
        row_id,
        key,
    }) = t.column(column).map(|c| c.class)
    else {
        panic!("{}.{column} is not sealed", t.table)
    };
    let rows: Vec<(String, Uuid, Vec<u8>)> = sqlx::query_as(&format!(
        r#"SELECT "{pk}"::text, "{row_id}", "{column}" FROM "{table}"
           WHERE "{owner_col}" = $1 AND "{column}" IS NOT NULL ORDER BY 1"#,
        pk = t.primary_key,
        table = t.table,
        owner_col = t.owner,
    ))
    .bind(owner)
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(k, row_id, value)| Cell {
            owner,
            key: k,
            column,
            aad_column,
            seal_key: key,
            row_id,
            value,
        })
        .collect()
}

async fn write(app: &TestApp, t: &OwnedTable, cell: &Cell, value: &[u8]) {
    let done = sqlx::query(&format!(
        r#"UPDATE "{}" SET "{}" = $2 WHERE "{}"::text = $1"#,
        t.table, cell.column, t.primary_key
    ))
    .bind(&cell.key)
    .bind(value)
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
}

/// Where the API reads each sealed column back to its owner: a path, with
/// `{id}` standing for the row's primary key, or `None` when no response
/// carries it. Every sealed column of the registry must be listed.
const READS: &[(&str, &str, Option<&str>)] = &[
    ("users", "email_ciphertext", Some("/v1/me")),
    ("users", "display_name_ciphertext", Some("/v1/me")),
    ("users", "phone_ciphertext", Some("/v1/me")),
    ("users", "date_of_birth_ciphertext", Some("/v1/me")),
    ("users", "address_ciphertext", Some("/v1/me")),
    // Opened only to apply a confirmed email change.
    ("users", "pending_email_ciphertext", None),
    // Every authenticated read of the account unwraps the key.
    ("user_keys", "wrapped_key", Some("/v1/me")),
    // Opened only to check codes, never returned.
    ("mfa_totp", "secret_ciphertext", None),
    ("mfa_totp", "pending_secret_ciphertext", None),
    // Write-only: never returned.
    ("devices", "push_token_ciphertext", None),
    ("notes", "title_ciphertext", Some("/v1/notes/{id}")),
    ("notes", "body_ciphertext", Some("/v1/notes/{id}")),
    (
        "rate_limit_requests",
        "reason_ciphertext",
        Some("/v1/me/rate-limit-requests"),
    ),
    (
        "rate_limit_requests",
        "note_ciphertext",
        Some("/v1/me/rate-limit-requests"),
    ),
];

#[tokio::test]
async fn seeded_values_are_sealed_at_rest_and_open_only_under_their_own_binding() {
    let app = TestApp::spawn().await;
    let ada = owner(&app, 71).await;
    let bob = owner(&app, 72).await;
    let dump = dump_everything(&app).await;
    for o in [&ada, &bob] {
        for m in &o.markers {
            let needle = m.value.to_ascii_lowercase();
            if let Some((table, _)) = dump.iter().find(|(_, v)| contains(v, &needle)) {
                panic!(
                    "the value seeded into {}.{} ({}) is stored in clear in {table}",
                    m.table,
                    m.column,
                    text(&m.value)
                );
            }
        }
    }

    let mut missing = Vec::new();
    for t in OWNED {
        for (column, aad_column, _, key) in t.sealed() {
            if !READS
                .iter()
                .any(|(rt, rc, _)| *rt == t.table && *rc == column)
            {
                missing.push(format!("{}.{column}", t.table));
            }
            for o in [&ada, &bob] {
                let mut opened = Vec::new();
                for c in cells(&app, t, column, o.id()).await {
                    let plain = open(&app, t, aad_column, key, o.id(), c.row_id, &c.value)
                        .await
                        .unwrap_or_else(|| {
                            panic!(
                                "{}.{column} of row {} does not open under its registered \
                                 binding ({}, {aad_column}, {}): sealed with another row id?",
                                t.table, c.key, t.table, c.row_id
                            )
                        });
                    opened.push(plain);
                }
                for m in o
                    .markers
                    .iter()
                    .filter(|m| m.table == t.table && m.column == column)
                {
                    assert!(
                        opened.iter().any(|p| contains(p, &m.value)),
                        "{}.{column}: the seeded {} is in no opened value",
                        t.table,
                        text(&m.value)
                    );
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "say in READS (tests/api/owned.rs) where the API reads {missing:?}, or None"
    );
}

#[tokio::test]
async fn a_sealed_value_swapped_with_another_does_not_open_and_the_api_answers_a_problem() {
    let app = TestApp::spawn().await;
    let ada = owner(&app, 73).await;
    let bob = owner(&app, 74).await;
    let token_of = |id: Uuid| {
        if id == ada.id() {
            ada.user.access()
        } else {
            bob.user.access()
        }
    };
    for t in OWNED {
        for (column, ..) in t.sealed() {
            // Two values of the same owner: two rows, else two columns of
            // the one row, else (one sealed column, one row per user) the
            // same column of another user's row.
            let mine = cells(&app, t, column, ada.id()).await;
            let first = mine[0].clone();
            let second = if let Some(c) = mine.get(1) {
                c.clone()
            } else {
                let mut other = None;
                for (c2, ..) in t
                    .sealed()
                    .filter(|(c2, .., k)| *c2 != column && *k == first.seal_key)
                {
                    if let Some(c) = cells(&app, t, c2, ada.id())
                        .await
                        .into_iter()
                        .find(|c| c.key == first.key)
                    {
                        other = Some(c);
                        break;
                    }
                }
                match other {
                    Some(c) => c,
                    None => cells(&app, t, column, bob.id()).await[0].clone(),
                }
            };
            let what = format!(
                "{}.{} of {} swapped with {}.{} of {}",
                t.table, first.column, first.key, t.table, second.column, second.key
            );
            write(&app, t, &first, &second.value).await;
            write(&app, t, &second, &first.value).await;
            for (cell, moved) in [(&first, &second.value), (&second, &first.value)] {
                let opened = open(
                    &app,
                    t,
                    cell.aad_column,
                    cell.seal_key,
                    cell.owner,
                    cell.row_id,
                    moved,
                )
                .await;
                assert!(
                    opened.is_none(),
                    "{what}: the moved value opens in its new place: {}",
                    text(&opened.unwrap_or_default())
                );
            }
            let read = READS
                .iter()
                .find(|(rt, rc, _)| *rt == t.table && *rc == first.column)
                .and_then(|(.., path)| *path);
            if let Some(path) = read {
                let path = path.replace("{id}", &first.key);
                let r = app.get_auth(&path, token_of(first.owner)).await;
                assert_eq!(r.status(), 500, "{what}: GET {path}");
                let body = problem(r).await;
                assert_eq!(body["code"], "internal_error", "{what}");
                let other_markers: Vec<&Marker> = [&ada, &bob]
                    .iter()
                    .flat_map(|o| o.markers.iter())
                    .filter(|m| m.table == t.table && m.column == second.column)
                    .collect();
                for m in other_markers {
                    assert!(
                        !contains(body.to_string().as_bytes(), &m.value),
                        "{what}: the answer carries a value"
                    );
                }
            }
            // Put them back; the owner reads their value again.
            write(&app, t, &first, &first.value).await;
            write(&app, t, &second, &second.value).await;
            if let Some(path) = read {
                let path = path.replace("{id}", &first.key);
                let r = app.get_auth(&path, token_of(first.owner)).await;
                assert_eq!(r.status(), 200, "{what}, restored: GET {path}");
            }
        }
    }
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("crypto_open_failures_total"), "{metrics}");
}

// ---- Export. ----

#[tokio::test]
async fn the_export_holds_every_exported_table_with_all_of_the_owners_rows() {
    let app = TestApp::spawn().await;
    let ada = owner(&app, 75).await;
    let _bob = owner(&app, 76).await;
    let mut expected_rows = BTreeMap::new();
    for t in OWNED {
        expected_rows.insert(t.table, keys_of(&app, t, ada.id()).await);
    }
    let r = app.get_auth("/v1/me/export", ada.user.access()).await;
    assert_eq!(r.status(), 200);
    let export: Value = r.json().await.unwrap();
    let mut claimed = BTreeSet::from(["exported_at".to_owned()]);
    for t in OWNED {
        let keys = &expected_rows[t.table];
        match t.export {
            Export::Rows { key, id } => {
                claimed.insert(key.to_owned());
                let items = export[key].as_array().unwrap_or_else(|| {
                    panic!(
                        "the export has no list `{key}` (registry: {} is exported)",
                        t.table
                    )
                });
                assert!(
                    items.len() >= keys.len(),
                    "export `{key}` has {} items, {} has {} rows of the owner",
                    items.len(),
                    t.table,
                    keys.len()
                );
                if let Some(id) = id {
                    let exported: BTreeSet<&str> =
                        items.iter().filter_map(|i| i[id].as_str()).collect();
                    for k in keys {
                        assert!(
                            exported.contains(k.as_str()),
                            "{} row {k} is missing from the export `{key}`",
                            t.table
                        );
                    }
                }
            }
            Export::Summary { key } => {
                claimed.insert(key.to_owned());
                assert!(
                    export[key].is_object(),
                    "the export has no `{key}` (registry: {} is summarised there)",
                    t.table
                );
            }
            Export::No { .. } => {}
        }
    }
    let keys: BTreeSet<String> = export.as_object().unwrap().keys().cloned().collect();
    let unclaimed: Vec<_> = keys.difference(&claimed).collect();
    assert!(
        unclaimed.is_empty(),
        "export keys no registered table claims: {unclaimed:?}"
    );
    // The owner's sealed values of exported tables are there, decrypted.
    let text = export.to_string();
    for m in &ada.markers {
        let exported_rows = mobile_backend::accounts::owned::owned(m.table)
            .is_some_and(|t| matches!(t.export, Export::Rows { .. } | Export::Summary { .. }));
        let sealed = mobile_backend::accounts::owned::owned(m.table)
            .and_then(|t| t.column(m.column))
            .is_some_and(|c| matches!(c.class, Class::Sealed { .. }));
        let returned = READS
            .iter()
            .any(|(t, c, read)| *t == m.table && *c == m.column && read.is_some());
        if exported_rows && sealed && returned {
            let plain = String::from_utf8(m.value.clone()).unwrap();
            let encoded = Value::String(plain.clone()).to_string();
            assert!(
                text.contains(&encoded[1..encoded.len() - 1]),
                "{}.{} ({plain}) is not in the export",
                m.table,
                m.column
            );
        }
    }
}

// ---- Erasure. ----

async fn assert_erased(app: &TestApp, user: Uuid, how: &str) {
    for t in OWNED {
        match t.erasure {
            Erasure::Cascade | Erasure::Explicit { .. } => {
                let left = count(app, t, user).await;
                assert_eq!(
                    left, 0,
                    "{how}: {} rows of the user remain in {}",
                    left, t.table
                );
            }
            Erasure::Retained { erased, .. } => {
                // A row a staff member wrote about the account (a decision
                // on its rate-limit request) holds that staff member's
                // client, not the user's: the erasure keeps it
                // (`audit_erase_client_details`, migration 0014).
                let own_rows = if t.column("actor_id").is_some() {
                    " AND (actor_id IS NULL OR actor_id = $1)"
                } else {
                    ""
                };
                for column in erased {
                    let kept: i64 = sqlx::query_scalar(&format!(
                        r#"SELECT count(*) FROM "{}" WHERE "{}" = $1 AND "{column}" IS NOT NULL{own_rows}"#,
                        t.table, t.owner
                    ))
                    .bind(user)
                    .fetch_one(&app.db)
                    .await
                    .unwrap();
                    assert_eq!(
                        kept, 0,
                        "{how}: {} of the user's rows of {} keep {column}",
                        kept, t.table
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn deleting_an_account_leaves_no_owned_row_and_erases_what_is_retained() {
    let app = TestApp::spawn().await;
    let ada = owner(&app, 77).await;
    let bob = owner(&app, 78).await;
    let mut bobs = BTreeMap::new();
    for t in OWNED {
        bobs.insert(t.table, count(&app, t, bob.id()).await);
    }
    next_step(&app);
    let code = app.totp_code(ada.totp.as_ref().unwrap());
    let r = app
        .send_auth(
            Method::DELETE,
            "/v1/me",
            ada.user.access(),
            Some(&json!({"current_password": ada.user.password, "code": code})),
        )
        .await;
    assert_eq!(r.status(), 204, "DELETE /v1/me");
    assert_erased(&app, ada.id(), "DELETE /v1/me").await;
    for t in OWNED {
        assert!(
            count(&app, t, bob.id()).await >= bobs[t.table],
            "another user's {} rows went too",
            t.table
        );
    }

    // An account nobody verified goes the same way after its TTL.
    let tag = Uuid::new_v4().simple().to_string();
    let email = format!("unverified.{tag}@example.com");
    let r = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": email, "password": crate::helpers::STRONG_PASSWORD, "display_name": format!("{tag} Name")}),
        )
        .await;
    assert_eq!(r.status(), 202);
    app.state.deferred.idle().await;
    let unverified: Uuid = sqlx::query_scalar(
        "SELECT user_id FROM users WHERE email_verified_at IS NULL ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    app.clock.advance(chrono::Duration::hours(25));
    let purged = mobile_backend::auth::unverified::purge_expired(&app.state)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_erased(&app, unverified, "the unverified-account deletion").await;
}

// ---- Cross-user access over the whole route table. ----

/// Routes with an id that answer another user's id on purpose, and why.
const PUBLIC_BY_ID: &[(&str, &str, &str)] = &[(
    "GET",
    "/v1/users/{id}",
    "the public profile: id and display name of any active account",
)];
/// The only fields a public profile may carry.
const PUBLIC_FIELDS: &[&str] = &["id", "display_name"];

fn spec() -> serde_yaml::Value {
    let raw =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml::from_str(&raw).unwrap()
}

/// The request example of an operation, if it takes a body (`{}` when the
/// spec gives none).
fn example_body(spec: &serde_yaml::Value, method: &str, path: &str) -> Option<Value> {
    let op = &spec["paths"][path][method.to_lowercase().as_str()];
    let content = op
        .get("requestBody")?
        .get("content")?
        .get("application/json")?;
    let example = content
        .get("example")
        .cloned()
        .or_else(|| {
            content
                .get("examples")
                .and_then(|e| e.as_mapping())
                .and_then(|m| m.values().next())
                .and_then(|e| e.get("value").cloned())
        })
        .map(|e| serde_json::to_value(e).unwrap());
    Some(example.unwrap_or_else(|| json!({})))
}

fn with_id(path: &str, id: &str) -> String {
    let start = path.find('{').unwrap();
    let end = path[start..].find('}').unwrap() + start;
    format!("{}{id}{}", &path[..start], &path[end + 1..])
}

/// Every owned row of `user`, as row text by (table, key). Retained tables
/// are left out: their rows are not the user's to change (the audit trail
/// is append-only), and the background sealing of audit rows changes them.
async fn snapshot(app: &TestApp, user: Uuid) -> BTreeMap<(&'static str, String), String> {
    let mut all = BTreeMap::new();
    for t in OWNED
        .iter()
        .filter(|t| !matches!(t.erasure, Erasure::Retained { .. }))
    {
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            r#"SELECT "{}"::text, row_to_json(t)::text FROM "{}" t WHERE "{}" = $1"#,
            t.primary_key, t.table, t.owner
        ))
        .bind(user)
        .fetch_all(&app.db)
        .await
        .unwrap();
        all.extend(rows.into_iter().map(|(k, row)| ((t.table, k), row)));
    }
    all
}

#[tokio::test]
async fn no_route_with_an_id_reaches_another_users_rows_on_any_verb() {
    let app = TestApp::spawn().await;
    let ada = owner(&app, 79).await;
    let aal1 = app.signed_up_user("bola.aal1@example.com").await;
    let aal2 = app.signed_up_user("bola.aal2@example.com").await;
    app.enable_totp(&aal2).await;
    // Up to five ids of Ada's from every registered table.
    let mut ids: Vec<(&str, String)> = Vec::new();
    for t in OWNED {
        for k in keys_of(&app, t, ada.id()).await.into_iter().take(5) {
            ids.push((t.table, k));
        }
    }
    let spec = spec();
    let routes: Vec<_> = app
        .routes
        .iter()
        .filter(|r| r.path.contains('{') && !r.path.starts_with(PROBE_PREFIX))
        .collect();
    assert!(
        routes.iter().any(|r| r.path == "/v1/notes/{id}"),
        "the route table was not read"
    );
    let before = snapshot(&app, ada.id()).await;

    for route in &routes {
        let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let body = example_body(&spec, route.method.as_str(), route.path);
        let public = PUBLIC_BY_ID
            .iter()
            .any(|(m, p, _)| *m == route.method.as_str() && *p == route.path);
        for caller in [&aal1, &aal2] {
            let call = |id: String| {
                let path = with_id(route.path, &id);
                let method = method.clone();
                let body = body.clone();
                let app = &app;
                async move {
                    let r = app
                        .send_auth(method, &path, caller.access(), body.as_ref())
                        .await;
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    (status, body)
                }
            };
            let label = |id: &str| {
                format!(
                    "{} {} as {}",
                    route.method,
                    with_id(route.path, id),
                    caller.email
                )
            };
            let random = Uuid::now_v7().to_string();
            let (status, reference) = call(random.clone()).await;
            if route.path.starts_with("/v1/admin/") {
                // Role-gated before any id is looked at: the caller is no staff.
                assert_eq!(status, 403, "{}", label(&random));
                for (table, id) in &ids {
                    let (status, _) = call(id.clone()).await;
                    assert_eq!(status, 403, "{} ({table} id)", label(id));
                }
                continue;
            }
            assert_eq!(
                status,
                404,
                "{}: a random id must reach the owner check and be 404 \
                 (give the operation a valid request example in openapi.yaml): {reference}",
                label(&random)
            );
            for (table, id) in &ids {
                let (status, answer) = call(id.clone()).await;
                if public && status == 200 {
                    let fields: BTreeSet<&str> = answer
                        .as_object()
                        .unwrap()
                        .keys()
                        .map(String::as_str)
                        .collect();
                    assert_eq!(
                        fields,
                        PUBLIC_FIELDS.iter().copied().collect(),
                        "{}: a public view with more than the public fields",
                        label(id)
                    );
                    continue;
                }
                assert!(
                    !(200..300).contains(&status),
                    "{} answered {status} with Ada's {table} id: {answer}",
                    label(id)
                );
                assert_eq!(
                    (status, &answer["code"], &answer["detail"]),
                    (404, &reference["code"], &reference["detail"]),
                    "{} ({table} id) does not answer like a random id",
                    label(id)
                );
            }
        }
    }
    let after = snapshot(&app, ada.id()).await;
    for (key, row) in &before {
        assert_eq!(after.get(key), Some(row), "Ada's {key:?} changed");
    }
    for key in after.keys() {
        assert!(before.contains_key(key), "a new row of Ada's: {key:?}");
    }
    // Not vacuous: each owned GET route serves Ada one of her ids.
    for route in routes.iter().filter(|r| {
        r.method.as_str() == "GET"
            && !r.path.starts_with("/v1/admin/")
            && !PUBLIC_BY_ID.iter().any(|(_, p, _)| *p == r.path)
    }) {
        let mut served = false;
        for (_, id) in &ids {
            let r = app
                .get_auth(&with_id(route.path, id), ada.user.access())
                .await;
            served |= r.status() == 200;
        }
        assert!(served, "GET {} never answers its owner", route.path);
    }
}
