//! `TestApp`: the real application on 127.0.0.1:0 with its own freshly
//! migrated database, a manual clock, a captured mailbox (the `file:`
//! transport) and typed helpers.
//!
//! Databases are created on `DATABASE_URL`'s server when it is set;
//! otherwise one throwaway PostgreSQL cluster per test process is started
//! from the local binaries (the same code as the development default) and
//! removed by a watchdog when the process exits.

use axum::Json as AxumJson;
use chrono::{DateTime, Utc};
use mobile_backend::{
    clock::Clock,
    config::Config,
    dev_db::{self, LocalPostgres},
    http::{extract::Json, routes::ApiRouter, routes::RouteSpec},
    keys::Keys,
    rate_limit::policy::Class,
    startup::Application,
    state::AppState,
};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::OnceLock};
use tempfile::TempDir;
use tokio::sync::oneshot;
use validator::Validate;

/// The PostgreSQL server tests create their databases on.
struct DbServer {
    admin_url: String,
}

static SERVER: tokio::sync::OnceCell<DbServer> = tokio::sync::OnceCell::const_new();
static TRACING: OnceLock<()> = OnceLock::new();

async fn db_server() -> &'static DbServer {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return DbServer { admin_url: url };
            }
            let pg = start_throwaway_cluster().await;
            DbServer {
                admin_url: pg.url("postgres"),
            }
        })
        .await
}

/// A throwaway cluster for this test process.
pub async fn start_throwaway_cluster() -> LocalPostgres {
    dev_db::start_throwaway()
        .await
        .expect("starting a throwaway PostgreSQL (is the server package installed?)")
}

/// Replaces the database name in a postgres URL.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, rest) = url.rsplit_once('/').expect("database URL with a path");
    let query = rest
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{base}/{db}{query}")
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub client: reqwest::Client,
    pub clock: Clock,
    /// A separate pool on the test's database, for raw reads and attacks.
    pub db: PgPool,
    pub state: AppState,
    pub routes: Vec<RouteSpec>,
    pub mail_dir: PathBuf,
    _tmp: TempDir,
    db_name: String,
    admin_url: String,
    /// False for an app started with `same_database_as`.
    owns_database: bool,
    /// The LOGIN role the app serves as, with `restricted_service_role`.
    pub service_role: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
pub struct TestAppBuilder {
    env: HashMap<String, String>,
    admin_url: Option<String>,
    restricted_service_role: bool,
    /// Serve an existing test database (another app's) instead of a fresh one.
    existing: Option<(String, String)>,
}

impl TestAppBuilder {
    /// Sets a configuration variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Serves as a fresh LOGIN role that is only a member of
    /// `mobile_backend_app` (owns nothing), with migrations run as the
    /// superuser through `MIGRATION_DATABASE_URL`: production's separation.
    /// The role is dropped with the app; `TestApp::db` stays the superuser.
    pub fn restricted_service_role(mut self) -> Self {
        self.restricted_service_role = true;
        self
    }

    /// Uses this server instead of the shared one.
    pub fn database_server(mut self, admin_url: String) -> Self {
        self.admin_url = Some(admin_url);
        self
    }

    /// A second application on `app`'s database (a restart, or another
    /// process), with `app`'s keys unless `env` replaces them. It leaves the
    /// database to `app`, which drops it.
    pub fn same_database_as(mut self, app: &TestApp) -> Self {
        self.existing = Some((app.admin_url.clone(), app.db_name.clone()));
        let keys = &app.state.keys;
        for (k, v) in [
            ("DATA_KEYS", keys.data.to_spec()),
            ("BLIND_INDEX_KEYS", keys.blind_index.ring().to_spec()),
            ("CODE_HMAC_KEYS", keys.codes.ring().to_spec()),
            ("SIGNING_KEYS", keys.signing.to_pem()),
        ] {
            self.env.entry(k.to_owned()).or_insert(v);
        }
        self
    }

    pub async fn spawn(self) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            TRACING.get_or_init(|| {
                mobile_backend::telemetry::init_tracing(mobile_backend::config::LogFormat::Pretty)
            });
        }
        let owns_database = self.existing.is_none();
        let (admin_url, db_name) = match self.existing {
            Some(existing) => existing,
            None => {
                let admin_url = match self.admin_url {
                    Some(url) => url,
                    None => db_server().await.admin_url.clone(),
                };
                let db_name = format!("test_{}", uuid::Uuid::new_v4().simple());
                dev_db::ensure_database(&admin_url, &db_name)
                    .await
                    .expect("creating the test database");
                (admin_url, db_name)
            }
        };
        let db_url = with_database(&admin_url, &db_name);

        let tmp = tempfile::tempdir().unwrap();
        let mail_dir = tmp.path().join("mail");
        let keys = Keys::generate().unwrap();
        let mut env: HashMap<String, String> = [
            ("APP_ENV", "development".to_owned()),
            ("DATABASE_URL", db_url.clone()),
            ("DATABASE_MAX_CONNECTIONS", "5".to_owned()),
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("DATA_DIR", tmp.path().display().to_string()),
            ("MAIL_TRANSPORT", format!("file:{}", mail_dir.display())),
            // Tests deliver explicitly (`deliver_mail`), so nothing races them.
            ("MAIL_POLL_SECS", "3600".to_owned()),
            // A dropped app closes its listener at once (no drain phase):
            // the shutdown tests in tests/shutdown.rs set their own.
            ("SHUTDOWN_GRACE_SECS", "0".to_owned()),
            ("DATA_KEYS", keys.data.to_spec()),
            ("BLIND_INDEX_KEYS", keys.blind_index.ring().to_spec()),
            ("CODE_HMAC_KEYS", keys.codes.ring().to_spec()),
            ("SIGNING_KEYS", keys.signing.to_pem()),
            // Cheaper argon2 for the suite (production refuses these values);
            // tests of the real parameters set their own.
            ("ARGON2_MEMORY_KIB", "4096".to_owned()),
            ("ARGON2_ITERATIONS", "1".to_owned()),
            // The suite's own traffic comes from one IP with a frozen clock:
            // limits are opened wide here; rate-limit tests set their own.
            ("RATE_LIMIT_CREDENTIALS", "100000/60".to_owned()),
            ("RATE_LIMIT_CREDENTIALS_ACCOUNT", "100000/60".to_owned()),
            ("RATE_LIMIT_LOGIN_FAILURES", "100000/60".to_owned()),
            ("RATE_LIMIT_REFRESH", "100000/60".to_owned()),
            ("RATE_LIMIT_READS", "100000/60".to_owned()),
            ("RATE_LIMIT_WRITES", "100000/60".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let service_role = if self.restricted_service_role {
            let (role, url) = create_service_role(&admin_url, &db_url).await;
            env.insert("MIGRATION_DATABASE_URL".into(), db_url.clone());
            env.insert("DATABASE_URL".into(), url);
            Some(role)
        } else {
            None
        };
        env.extend(self.env);
        let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
        let clock = Clock::manual(
            DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        let app = Application::build_with(config, clock.clone(), probe_routes())
            .await
            .expect("building the application");
        let addr = app.local_addr().unwrap();
        let metrics_addr = app.metrics_addr().unwrap();
        let state = app.state().clone();
        let routes = app.routes().to_vec();
        let (tx, rx) = oneshot::channel();
        tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        let db = PgPool::connect(&db_url).await.unwrap();
        // The mail sender's start-up pass must not race what a test queues.
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            state.outbox.first_pass(),
        )
        .await
        .expect("the mail sender's first pass");
        TestApp {
            addr,
            metrics_addr,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            clock,
            db,
            state,
            routes,
            mail_dir,
            _tmp: tmp,
            db_name,
            admin_url,
            owns_database,
            service_role,
            shutdown: Some(tx),
        }
    }
}

/// A LOGIN role in `mobile_backend_app` (the group migration 0014 creates;
/// created here first on a server that has not run it yet) and its URL on
/// the test database.
async fn create_service_role(admin_url: &str, db_url: &str) -> (String, String) {
    let role = format!("test_svc_{}", uuid::Uuid::new_v4().simple());
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut conn = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mobile_backend_app') THEN
             BEGIN CREATE ROLE mobile_backend_app NOLOGIN;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
           END IF;
         END $$",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query(&format!(
        "CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' IN ROLE mobile_backend_app"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut url = reqwest::Url::parse(db_url).unwrap();
    url.set_username(&role).unwrap();
    url.set_password(Some(&password)).unwrap();
    (role, url.to_string())
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Runs one outbox pass now, then returns every captured message.
    pub async fn deliver_mail(&self) -> Vec<CapturedMail> {
        // Codes are queued after the answer (enumeration timing): wait for
        // that work before delivering.
        self.state.deferred.idle().await;
        let transport =
            mobile_backend::mail::transport::Transport::from_config(&self.state.config).unwrap();
        mobile_backend::mail::sender::deliver_due(&self.state, &transport)
            .await
            .unwrap();
        self.mailbox()
    }

    /// Delivers until nothing is pending (the background sender may hold a
    /// message's lease mid-delivery), then returns the mailbox.
    pub async fn drain_outbox(&self) -> Vec<CapturedMail> {
        for _ in 0..250 {
            self.deliver_mail().await;
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE status = 'pending'")
                    .fetch_one(&self.db)
                    .await
                    .unwrap();
            if pending == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.mailbox()
    }

    /// The messages the file transport has written so far.
    pub fn mailbox(&self) -> Vec<CapturedMail> {
        let Ok(entries) = std::fs::read_dir(&self.mail_dir) else {
            return vec![];
        };
        let mut mails: Vec<CapturedMail> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect();
        mails.sort_by_key(|m: &CapturedMail| m.id);
        mails
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if !self.owns_database {
            return;
        }
        let admin = self.admin_url.clone();
        let name = self.db_name.clone();
        let role = self.service_role.take();
        // Drop is synchronous and may run inside a runtime: use a thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    if let Some(role) = role {
                        let _ = sqlx::query(&format!("DROP ROLE IF EXISTS \"{role}\""))
                            .execute(&mut conn)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// A verified account with a signed-in session.
pub struct TestUser {
    pub email: String,
    pub password: String,
    pub user_id: uuid::Uuid,
    pub tokens: Value,
}

impl TestUser {
    pub fn access(&self) -> &str {
        self.tokens["access_token"].as_str().unwrap()
    }

    pub fn refresh_token(&self) -> &str {
        self.tokens["refresh_token"].as_str().unwrap()
    }
}

pub const STRONG_PASSWORD: &str = "correct-horse-battery-staple-42";

impl TestApp {
    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/v1/auth/register",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    /// The 6-digit code of the newest message to `to`, after delivering mail.
    pub async fn code_for(&self, to: &str) -> String {
        let mails = self.drain_outbox().await;
        let mail = mails
            .iter()
            .rev()
            .find(|m| m.to == to)
            .unwrap_or_else(|| panic!("no mail to {to}"));
        mail.text
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 6)
            .expect("a 6-digit code in the mail")
            .to_owned()
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/v1/auth/login",
            &serde_json::json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post_json(
            "/v1/auth/refresh",
            &serde_json::json!({"refresh_token": refresh_token}),
        )
        .await
    }

    /// Refresh-token reuse for `user`, the way theft shows: the owner
    /// refreshes and uses the successor, then the retired first token comes
    /// back (a retry before the successor's use would just get it again).
    /// Revokes the session and raises a `refresh_token_reuse` alert.
    pub async fn make_refresh_reuse(&self, user: &TestUser) {
        let next: Value = self
            .refresh(user.refresh_token())
            .await
            .json()
            .await
            .unwrap();
        self.refresh(next["refresh_token"].as_str().unwrap()).await;
        self.refresh(user.refresh_token()).await;
    }

    /// Registers, verifies from the mailbox (which signs in).
    pub async fn signed_up_user(&self, email: &str) -> TestUser {
        assert_eq!(self.register(email, STRONG_PASSWORD).await.status(), 202);
        let code = self.code_for(email).await;
        let r = self.verify_email(email, &code, STRONG_PASSWORD).await;
        assert_eq!(r.status(), 200, "verify");
        let tokens: Value = r.json().await.unwrap();
        let claims = decode_claims(tokens["access_token"].as_str().unwrap());
        TestUser {
            email: email.to_owned(),
            password: STRONG_PASSWORD.to_owned(),
            user_id: claims["sub"].as_str().unwrap().parse().unwrap(),
            tokens,
        }
    }

    /// `POST /v1/auth/verify-email` with the code and the password.
    pub async fn verify_email(&self, email: &str, code: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/v1/auth/verify-email",
            &serde_json::json!({"email": email, "code": code, "password": password}),
        )
        .await
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_auth(
        &self,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.unwrap()
    }

    /// Any method, with a bearer token and an optional JSON body.
    pub async fn send_auth(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.unwrap()
    }

    /// Turns on TOTP for `user`; their current session becomes aal2.
    /// Returns the raw secret, for computing later codes.
    pub async fn enable_totp(&self, user: &TestUser) -> Vec<u8> {
        let secret = self.totp_setup(user).await;
        let r = self
            .post_auth(
                "/v1/mfa/totp/confirm",
                user.access(),
                Some(&serde_json::json!({"code": self.totp_code(&secret)})),
            )
            .await;
        assert_eq!(r.status(), 200, "totp confirm");
        secret
    }

    /// Starts TOTP enrolment (not yet confirmed); returns the raw secret.
    pub async fn totp_setup(&self, user: &TestUser) -> Vec<u8> {
        let setup: Value = self
            .post_auth(
                "/v1/mfa/totp/setup",
                user.access(),
                Some(&serde_json::json!({"current_password": user.password})),
            )
            .await
            .json()
            .await
            .unwrap();
        totp_rs::Secret::try_from_base32(setup["secret"].as_str().unwrap())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// The Prometheus text of the metrics listener.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Runs the `mobile-backend` binary against this app's database and
    /// keys (`data_keys` replaces `DATA_KEYS` when given) as an awaited child
    /// process: never a blocking wait, because this app's background tasks
    /// (audit sealing holds a lock inside a transaction) must keep running
    /// while the child works. `stdin` is written to the child.
    pub async fn run_cli(
        &self,
        args: &[&str],
        data_keys: Option<&str>,
        stdin: Option<&str>,
    ) -> std::process::Output {
        let data_keys = data_keys.map(|k| ("DATA_KEYS", k));
        self.run_cli_with(args, data_keys.as_slice(), stdin).await
    }

    /// [`TestApp::run_cli`] with any of the variables it sets replaced
    /// (`DATA_KEYS`, `BLIND_INDEX_KEYS`, `CODE_HMAC_KEYS`, …), or others
    /// added (an empty value leaves a variable unset).
    pub async fn run_cli_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> std::process::Output {
        use tokio::io::AsyncWriteExt;
        let db_url = self
            .state
            .config
            .database_url
            .as_ref()
            .map(|u| secrecy::ExposeSecret::expose_secret(u).to_owned())
            .unwrap();
        let dir = self.mail_dir.parent().unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobile-backend"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db_url)
            .env("DATA_KEYS", self.state.keys.data.to_spec())
            .env("DATA_DIR", dir)
            .env(
                "BLIND_INDEX_KEYS",
                self.state.keys.blind_index.ring().to_spec(),
            )
            .env("CODE_HMAC_KEYS", self.state.keys.codes.ring().to_spec())
            .env("SIGNING_KEYS", self.state.keys.signing.to_pem())
            // The suite's cheap argon2 parameters, like the app's.
            .env("ARGON2_MEMORY_KIB", "4096")
            .env("ARGON2_ITERATIONS", "1")
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        tokio::time::timeout(
            std::time::Duration::from_secs(120),
            child.wait_with_output(),
        )
        .await
        .expect("the CLI finishes within two minutes")
        .unwrap()
    }

    /// The TOTP code at the test clock's current time.
    pub fn totp_code(&self, secret: &[u8]) -> String {
        mobile_backend::mfa::totp::code_at(secret, self.clock.now().timestamp() as u64, 6).unwrap()
    }

    /// A verified user with `role` whose session completed the second
    /// factor (staff routes need aal2).
    pub async fn staff_user(&self, email: &str, role: &str) -> TestUser {
        let user = self.signed_up_user(email).await;
        // The factor first: a staff account cannot enrol itself.
        self.enable_totp(&user).await;
        sqlx::query("UPDATE users SET role = $2 WHERE user_id = $1")
            .bind(user.user_id)
            .bind(role)
            .execute(&self.db)
            .await
            .unwrap();
        user
    }

    pub async fn delete_auth(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

/// The payload of a JWT, unverified (for assertions only).
pub fn decode_claims(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[derive(Debug, Deserialize)]
pub struct CapturedMail {
    pub id: uuid::Uuid,
    pub to: String,
    pub subject: String,
    pub text: String,
}

/// A problem+json body.
pub async fn problem(response: reqwest::Response) -> Value {
    let ct = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(ct, "application/problem+json", "not a problem response");
    response.json().await.unwrap()
}

/// Every value of every table of the schema, by table: each row as
/// `row_to_json` text (where bytea shows as hex) and every bytea value as
/// its raw bytes, all in ASCII lower case, for "never stored in clear"
/// checks (`contains`).
pub async fn dump_everything(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let mut all = Vec::new();
    for table in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!(r#"SELECT row_to_json(t)::text FROM "{table}" t"#))
                .fetch_all(&app.db)
                .await
                .unwrap();
        all.extend(rows.into_iter().map(|r| (table.clone(), r.into_bytes())));
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 AND data_type = 'bytea'",
        )
        .bind(&table)
        .fetch_all(&app.db)
        .await
        .unwrap();
        for column in columns {
            let values: Vec<Option<Vec<u8>>> =
                sqlx::query_scalar(&format!(r#"SELECT "{column}" FROM "{table}""#))
                    .fetch_all(&app.db)
                    .await
                    .unwrap();
            all.extend(values.into_iter().flatten().map(|v| (table.clone(), v)));
        }
    }
    for (_, v) in &mut all {
        v.make_ascii_lowercase();
    }
    all
}

/// Whether `needle` (non-empty) occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---- Probe routes: test-only handlers behind the production layers. ----

#[derive(Debug, Deserialize, Serialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct EchoRequest {
    #[validate(length(min = 1, max = 32))]
    pub name: String,
    #[validate(range(min = 1, max = 10))]
    pub count: u8,
    #[serde(default)]
    pub note: Option<String>,
}

async fn echo(Json(body): Json<EchoRequest>) -> AxumJson<EchoRequest> {
    AxumJson(body)
}

async fn ok() -> &'static str {
    "ok"
}

async fn boom() -> &'static str {
    panic!("secret-panic-detail: the database password is hunter2")
}

async fn slow() -> &'static str {
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    "slow"
}

async fn db_probe(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<&'static str, mobile_backend::error::ApiError> {
    sqlx::query("SELECT 1").execute(&state.db).await?;
    Ok("db")
}

pub const PROBE_PREFIX: &str = "/v1/_probe";

fn probe_routes() -> ApiRouter {
    ApiRouter::new()
        .route(
            Method::POST,
            "/v1/_probe/echo",
            "probe_echo",
            Class::Writes,
            echo,
        )
        .route(Method::GET, "/v1/_probe", "probe_ok", Class::Reads, ok)
        .route(
            Method::GET,
            "/v1/_probe/panic",
            "probe_panic",
            Class::Reads,
            boom,
        )
        .route(
            Method::GET,
            "/v1/_probe/slow",
            "probe_slow",
            Class::Reads,
            slow,
        )
        .route(
            Method::GET,
            "/v1/_probe/db",
            "probe_db",
            Class::Reads,
            db_probe,
        )
}

/// The TOTP code of `secret` at the test clock's current time.
pub fn code(app: &TestApp, secret: &[u8]) -> String {
    app.totp_code(secret)
}

/// Moves to the start of the next 30-second step (a TOTP step is single use).
pub fn next_step(app: &TestApp) {
    let t = app.clock.now().timestamp();
    app.clock
        .advance(chrono::Duration::seconds(30 - t.rem_euclid(30)));
}

/// The raw secret of a `setup_totp` answer.
pub fn secret_of(setup: &Value) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(setup["secret"].as_str().unwrap())
        .unwrap()
        .as_ref()
        .to_vec()
}
