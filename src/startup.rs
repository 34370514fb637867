//! Building and running the application: pool, migrations, state, the API
//! listener (plain HTTP, or TLS through [`crate::tls`]), the metrics
//! listener, the mail sender and the background passes (audit maintenance,
//! alert webhook, client policy refresh, unverified-account deletion,
//! rate-limit tier expiry and 429 counts),
//! with graceful shutdown.
//!
//! Tests call [`Application::build_with`] with port 0, a manual clock and
//! probe routes, and get the same stack production runs.

use crate::{
    accounts::password::PasswordHasher,
    audit::{self, events, AuditEvent, Outcome},
    background,
    clock::Clock,
    config::Config,
    http::{self, client_version::ClientPolicy, routes::ApiRouter, routes::RouteSpec},
    keys::Keys,
    mail::{self, transport::Transport, Outbox},
    state::AppState,
    telemetry,
    tokens::TokenSettings,
};
use anyhow::Context;
use axum::Router;
use secrecy::ExposeSecret;
use sqlx::{postgres::PgPoolOptions, PgPool};
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::{net::TcpListener, sync::watch};

/// The embedded migrations (`migrations/`), applied at start-up and by `migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub struct Application {
    state: AppState,
    router: Router,
    routes: Vec<RouteSpec>,
    listener: TcpListener,
    metrics_listener: TcpListener,
    transport: Transport,
    /// Native TLS for `listener`, when `TLS_CERT_FILE`/`TLS_KEY_FILE` are set.
    tls: Option<crate::tls::TlsServer>,
}

/// Opens the pool with bounded size and timeouts.
/// How long a pooled connection may sit unused before it is pinged when
/// handed out again.
const PING_AFTER_IDLE: Duration = Duration::from_secs(5);

pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let url = config
        .database_url
        .as_ref()
        .context("DATABASE_URL is not set")?;
    PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .min_connections(0)
        .acquire_timeout(config.database_acquire_timeout)
        // sqlx pings every connection it hands out by default: a round
        // trip before each query, the most common cost of a request. A
        // connection that was in use a moment ago is known good, so only
        // one idle longer than PING_AFTER_IDLE is pinged (and replaced if
        // the ping fails). A connection cut in between fails its query as
        // a 503 `database_unavailable`, and a read runs once more
        // (`http::retry`): the same answer as a cut during the query.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .idle_timeout(Duration::from_secs(300))
        .max_lifetime(Duration::from_secs(1800))
        .connect(url.expose_secret())
        .await
        .context("connecting to the database")
}

/// Applies the migrations and records the audit retention period: as
/// `MIGRATION_DATABASE_URL`'s role (the owner) when it is set, otherwise
/// on `db`. A service role that owns nothing finds nothing to do once the
/// owner has migrated, and a clear error when the owner has not.
pub async fn migrate(config: &Config, db: &PgPool) -> anyhow::Result<()> {
    if let Some(url) = &config.migration_database_url {
        let owner = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.database_acquire_timeout)
            .connect(url.expose_secret())
            .await
            .context("connecting with MIGRATION_DATABASE_URL")?;
        MIGRATOR.run(&owner).await.context("applying migrations")?;
        audit::retention::set_policy(&owner, config.audit_retention)
            .await
            .context("recording AUDIT_RETENTION_DAYS")?;
        owner.close().await;
        return Ok(());
    }
    if !migrations_current(db).await {
        MIGRATOR.run(db).await.context(
            "applying migrations with DATABASE_URL's role (a role that owns nothing \
             cannot: run `mobile-backend migrate` with MIGRATION_DATABASE_URL set to the owner role)",
        )?;
    }
    let days = config.audit_retention.num_days();
    if audit::retention::policy_days(db).await? != Some(days) {
        if let Err(e) = audit::retention::set_policy(db, config.audit_retention).await {
            tracing::warn!(
                error = %e,
                audit_retention_days = days,
                "AUDIT_RETENTION_DAYS differs from the database's retention period and this role may not change it; run `migrate` as the owner"
            );
        }
    }
    Ok(())
}

/// Whether every embedded migration is recorded as applied, unchanged.
async fn migrations_current(db: &PgPool) -> bool {
    // `_sqlx_migrations` is sqlx's own table, absent from the offline query
    // data: a runtime query.
    let Ok(applied) = sqlx::query_as::<_, (i64, Vec<u8>)>(
        "SELECT version, checksum FROM _sqlx_migrations WHERE success",
    )
    .fetch_all(db)
    .await
    else {
        return false;
    };
    MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .all(|m| {
            applied
                .iter()
                .any(|(v, c)| *v == m.version && c.as_slice() == &*m.checksum)
        })
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Clock::system(), ApiRouter::new()).await
    }

    /// Builds with a chosen clock and extra routes (tests mount probes).
    pub async fn build_with(
        config: Config,
        clock: Clock,
        extra: ApiRouter,
    ) -> anyhow::Result<Self> {
        // A bad certificate or key stops start-up first, before the database
        // is touched or anything is served.
        let tls = match &config.tls {
            Some(settings) => Some(crate::tls::TlsServer::load(settings).await?),
            None => None,
        };
        let db = connect(&config).await?;
        migrate(&config, &db).await?;
        if config.app_env == crate::config::AppEnv::Production
            && audit::retention::service_owns_audit_trail(&db).await?
        {
            tracing::warn!("the service's database role owns the audit tables and could rewrite audit history; run migrations as a separate owner role (MIGRATION_DATABASE_URL) and serve as a member of mobile_backend_app");
        }
        let keys = Keys::load(&config)?;
        let attestation =
            crate::attestation::verifiers::Verifiers::from_settings(&config.attestation)?;
        let transport = Transport::from_config(&config)?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("binding LISTEN_ADDR {}", config.listen_addr))?;
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .await
            .with_context(|| format!("binding METRICS_ADDR {}", config.metrics_addr))?;
        telemetry::metrics_handle();
        let hasher = PasswordHasher::with_nice(
            config.auth.argon2.clone(),
            config.keys.password_pepper_keys.clone(),
            config.auth.password_hash_concurrency,
            config.auth.password_hash_queue,
            config.auth.password_hash_nice,
        )
        .map_err(|e| anyhow::anyhow!("password hasher: {e}"))?;
        let token_settings = TokenSettings {
            issuer: config.auth.jwt_issuer.clone(),
            audience: config.auth.jwt_audience.clone(),
            ttl: config.auth.access_token_ttl,
        };
        let breached_passwords = config
            .auth
            .breached_password_api
            .clone()
            .map(crate::accounts::breached::BreachedPasswords::new)
            .transpose()?;
        let limiter = crate::rate_limit::Limiter::new(
            config.rate_limits.clone(),
            config.redis_url.as_ref().map(|u| u.expose_secret()),
            &config.redis_key_prefix,
            config.redis_faults,
        )
        .context("REDIS_URL")?;
        let state = AppState {
            limiter: Arc::new(limiter),
            refusals: Arc::default(),
            profile_views: Arc::default(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
            breached_passwords,
            hasher,
            token_settings: Arc::new(token_settings),
            client_policy: Arc::new(ClientPolicy::from_config(&config)),
            config: Arc::new(config),
            db,
            clock,
            keys: Arc::new(keys),
            outbox: Outbox::new(),
            tls_enabled: tls.is_some(),
            deferred: crate::auth::deferred::Deferred::default(),
            draining: crate::state::Draining::default(),
            attestation: Arc::new(attestation),
        };
        let (router, routes) = http::app(state.clone(), extra);
        // Run-time minimum app versions are in force from the first request.
        crate::admin::client_policy::refresh(&state)
            .await
            .context("reading the client policy")?;
        let mut conn = state.db.acquire().await?;
        audit::record(
            &mut conn,
            state.clock.now(),
            &AuditEvent::new(events::SYSTEM_STARTED, Outcome::Success)
                .detail("version", env!("CARGO_PKG_VERSION")),
        )
        .await?;
        Ok(Self {
            state,
            router,
            routes,
            listener,
            metrics_listener,
            transport,
            tls,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The routed operations, for the spec-vs-router test.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// Serves until `shutdown` completes, then shuts down without losing a
    /// request the load balancer sent:
    ///
    /// 1. Draining, for `SHUTDOWN_GRACE_SECS`: `/readyz` answers 503 at
    ///    once, so the load balancer takes the process out of rotation;
    ///    meanwhile everything is served as before (connections are still
    ///    accepted), except that HTTP/1 responses carry `Connection: close`.
    /// 2. The API listener closes (what is left in its backlog is still
    ///    served); HTTP/2 connections get a GOAWAY; in-flight requests and
    ///    work deferred after an answer finish within
    ///    `SHUTDOWN_TIMEOUT_SECS`, and what is still running then is dropped.
    /// 3. The background tasks and the metrics listener stop
    ///    (`crate::background`: one `watch` channel, set to `true` once, is
    ///    every task's stop signal; a pass in progress finishes).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = self.state.config.shutdown_grace;
        let timeout = self.state.config.shutdown_timeout;
        let (stop_tx, stop_rx) = watch::channel(false);
        let sender = tokio::spawn(mail::sender::run(
            self.state.clone(),
            self.transport,
            stop_rx.clone(),
        ));
        let maintenance = tokio::spawn(crate::audit::maintenance(
            self.state.clone(),
            stop_rx.clone(),
        ));
        let webhook = tokio::spawn(crate::alerts::webhook::run(
            self.state.clone(),
            stop_rx.clone(),
        ));
        let policy = tokio::spawn(crate::admin::client_policy::run_refresh(
            self.state.clone(),
            stop_rx.clone(),
        ));
        let unverified = tokio::spawn(crate::auth::unverified::run(
            self.state.clone(),
            stop_rx.clone(),
        ));
        let tiers = tokio::spawn(crate::rate_limit::tiers::run(
            self.state.clone(),
            stop_rx.clone(),
        ));
        let successors = tokio::spawn(crate::sessions::successor::run_sweeper(
            self.state.clone(),
            stop_rx.clone(),
        ));
        let attestation = tokio::spawn(crate::attestation::run_sweeper(
            self.state.clone(),
            stop_rx.clone(),
        ));
        let deferred = self.state.deferred.clone();
        let stopped = |mut stop: background::Stop| async move {
            background::stopped(&mut stop).await;
        };
        let metrics = axum::serve(self.metrics_listener, telemetry::metrics_router())
            .with_graceful_shutdown(stopped(stop_rx.clone()));
        let metrics = tokio::spawn(async move { metrics.await });

        let draining = self.state.draining.clone();
        let (closed_tx, mut closed_rx) = watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutdown requested: /readyz answers 503, serving on with Connection: close"
            );
            draining.begin();
            tokio::time::sleep(grace).await;
            tracing::info!(
                "shutdown grace period over: closing the listener, finishing in-flight requests"
            );
            let _ = closed_tx.send(true);
        };
        // Same semantics either way: both go through `crate::listener`
        // (slow-client timeouts, the connection cap, graceful close).
        let limits = self.state.config.listener;
        let api: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
            match self.tls {
                Some(tls) => Box::pin(tls.serve(self.listener, self.router, shutdown, limits)),
                None => Box::pin(crate::listener::serve(
                    self.listener,
                    self.router,
                    crate::listener::Transport::Plain,
                    limits,
                    shutdown,
                )),
            };
        // `SHUTDOWN_TIMEOUT_SECS` counts from the listener's close (`api`
        // ends only after it, or with an error).
        let mut api = api;
        let done = tokio::select! {
            result = &mut api => {
                result.context("serving the API")?;
                true
            }
            _ = closed_rx.wait_for(|c| *c) => false,
        };
        let end = tokio::time::Instant::now() + timeout;
        if !done {
            match tokio::time::timeout_at(end, &mut api).await {
                Ok(result) => result.context("serving the API")?,
                Err(_) => tracing::warn!(
                    ?timeout,
                    "shutdown timeout over; dropping remaining requests"
                ),
            }
        }
        // Whatever still runs is dropped now, not after the background
        // tasks: no handler may commit past the timeout.
        drop(api);
        // Work handed off after an answer (a code to mail) finishes too,
        // within the same timeout.
        if tokio::time::timeout_at(end, deferred.idle()).await.is_err() {
            tracing::warn!("deferred work still running at shutdown");
        }
        let _ = stop_tx.send(true);
        let _ = sender.await;
        let _ = maintenance.await;
        let _ = unverified.await;
        let _ = tiers.await;
        let _ = successors.await;
        let _ = attestation.await;
        let _ = webhook.await;
        let _ = policy.await;
        let _ = metrics.await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when first polled, so a signal arriving early is not lost
/// (and does not kill the process with the default action).
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
