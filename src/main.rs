//! The `mobile-backend` command: `serve` (the default), `migrate`,
//! `keys …`, `admin …`, `audit …` and `tls-pins`.
//!
//! Start-up failures print one clear line per problem and exit non-zero;
//! secrets are never printed.

use clap::{Parser, Subcommand};
use mobile_backend::{
    accounts::Role,
    config::{AppEnv, Config},
    crypto::KeyRing,
    dev_db::{self, LocalPostgres},
    keys::{Keys, RingName},
    startup::{self, Application},
    telemetry,
    tokens::SigningKeys,
};
use secrecy::SecretString;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mobile-backend",
    version,
    about = "A secure account and profile API for mobile apps"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Key management.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the SPKI SHA-256 pins of a certificate and of a backup key, with
    /// Android and iOS certificate-pinning snippets (reads only the files
    /// given; needs no configuration).
    TlsPins(mobile_backend::tls::pins::PinsArgs),
    /// The audit trail's hash chain.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Bootstrap administrators (needs the database and the keys).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a verified account with a staff role. The password is
    /// prompted for (not echoed) on a terminal, or read as one line from stdin.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, value_enum, default_value = "admin")]
        role: RoleArg,
    },
    /// Give an existing account a role.
    Promote {
        #[arg(long)]
        email: String,
        #[arg(long, value_enum)]
        role: RoleArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    User,
    Support,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::User => Role::User,
            RoleArg::Support => Role::Support,
            RoleArg::Admin => Role::Admin,
        }
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the chain and report the first broken link (exit 1 if any).
    Verify {
        /// A chain head kept outside the database (`POS:HASH`, as logged
        /// in `audit_chain_head`); exit 1 unless the chain still holds it.
        /// May be repeated.
        #[arg(long = "anchor", value_name = "POS:HASH")]
        anchors: Vec<mobile_backend::audit::chain::Anchor>,
    },
    /// Seal every committed row now (the server also does this every 10 s).
    Seal,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh set of DATA_KEYS, BLIND_INDEX_KEYS, CODE_HMAC_KEYS and
    /// PASSWORD_PEPPER_KEYS lines for a production environment (to stdout,
    /// nothing is stored).
    Generate,
    /// Print a new Ed25519 access-token signing key (PKCS#8 PEM). To rotate,
    /// put it first in SIGNING_KEYS and keep the old key after it until the
    /// longest access-token lifetime has passed.
    GenerateSigning,
    /// Add a new key as current to a ring (`--ring`, default the master
    /// data keys; `pepper` prints PASSWORD_PEPPER_KEYS values only). With the ring's variable set, prints its two next values
    /// to store in your secret manager in turn (nothing is written): the new
    /// key known but unused, then current. In development, updates
    /// $DATA_DIR/dev-keys.json at once. Then: `keys rewrap` (data), `keys
    /// reindex` (blind-index); nothing for the code keys.
    Rotate {
        #[arg(long, value_enum, default_value = "data")]
        ring: RingArg,
    },
    /// Re-seal under the current master key everything sealed under an
    /// older one (by each value's header): user data keys, mail waiting in
    /// the outbox, sealed refresh successors; in batches (resumable, safe
    /// while the service serves). A value that does not open is reported
    /// and skipped, and the run then exits 1. Only when it ends "done" can
    /// the old master keys be removed from DATA_KEYS.
    Rewrap {
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// Recompute every blind index not under the current key of
    /// BLIND_INDEX_KEYS from the value it indexes, in batches (resumable,
    /// safe while the service serves). Afterwards `keys status` says when
    /// an old index key can leave the ring.
    Reindex {
        #[arg(long = "batch-size", default_value_t = 500)]
        batch_size: i64,
    },
    /// How many user data keys (checked one by one), queued mails and
    /// sealed refresh successors each master key still seals, how many
    /// blind indexes each index key computed, and how many usable codes
    /// each code key made.
    Status,
}

/// The ring `keys rotate` adds a key to.
#[derive(Clone, Copy, clap::ValueEnum)]
enum RingArg {
    /// DATA_KEYS, the master data keys.
    Data,
    /// BLIND_INDEX_KEYS.
    BlindIndex,
    /// CODE_HMAC_KEYS.
    Codes,
    /// PASSWORD_PEPPER_KEYS (from none: introduces the pepper).
    Pepper,
}

impl RingArg {
    fn ring(self) -> Option<RingName> {
        match self {
            RingArg::Data => Some(RingName::Data),
            RingArg::BlindIndex => Some(RingName::BlindIndex),
            RingArg::Codes => Some(RingName::Codes),
            RingArg::Pepper => None,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::TlsPins(args)) = &cli.command {
        // Needs no configuration: it runs on a release machine or a laptop.
        return match mobile_backend::tls::pins::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(Command::Keys(
        keys_command @ (KeysCommand::Generate
        | KeysCommand::GenerateSigning
        | KeysCommand::Rotate { .. }),
    )) = &cli.command
    {
        // Needs no configuration: it is how a new deployment gets its keys.
        return match keys(keys_command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if std::env::var("APP_ENV").as_deref() != Ok("production") {
        // Development convenience only: production takes its environment as given.
        let _ = dotenvy::dotenv();
    }
    let mut config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_tracing(config.log_format);
    let dev_db = match ensure_database(&mut config).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(config).await,
        Command::Audit(command) => audit(config, command).await,
        Command::Admin(command) => admin(config, command).await,
        Command::Keys(command) => keys_with_database(config, command).await,
        Command::TlsPins(_) => Ok(()),
    };
    if let Some(db) = dev_db {
        if let Err(e) = db.stop().await {
            tracing::warn!(error = %e, "could not stop the development database");
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn keys(command: &KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate => {
            let keys = Keys::generate()?;
            println!("DATA_KEYS={}", keys.data.to_spec());
            println!("BLIND_INDEX_KEYS={}", keys.blind_index.ring().to_spec());
            println!("CODE_HMAC_KEYS={}", keys.codes.ring().to_spec());
            // Optional, but a new deployment loses nothing by starting with one.
            let (_, pepper) = mobile_backend::crypto::PepperKeys::rotation(None)?;
            println!("PASSWORD_PEPPER_KEYS={}", pepper.to_spec());
        }
        KeysCommand::GenerateSigning => print!("{}", SigningKeys::generate_pem()?),
        KeysCommand::Rotate { ring } => match ring.ring() {
            Some(which) => rotate_ring(which)?,
            None => rotate_pepper()?,
        },
        KeysCommand::Rewrap { .. } | KeysCommand::Reindex { .. } | KeysCommand::Status => {}
    }
    Ok(())
}

/// `keys rotate --ring pepper`: the two values of PASSWORD_PEPPER_KEYS
/// (nothing is stored; the development keys file holds no pepper).
fn rotate_pepper() -> anyhow::Result<()> {
    use mobile_backend::crypto::PepperKeys;
    if std::env::var("APP_ENV").as_deref() != Ok("production") {
        let _ = dotenvy::dotenv();
    }
    let given = std::env::var("PASSWORD_PEPPER_KEYS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|spec| PepperKeys::parse(&spec))
        .transpose()?;
    let (staged, current) = PepperKeys::rotation(given.as_ref())?;
    let new_id = current.current_id().unwrap_or_default();
    eprintln!(
        "new pepper key {new_id}; store the two PASSWORD_PEPPER_KEYS values below in order, each followed by a restart of every process:"
    );
    println!("# 1. every process learns pepper key {new_id}, still unused:");
    println!("PASSWORD_PEPPER_KEYS={}", staged.to_spec());
    println!("# 2. then key {new_id} becomes current; each password is re-hashed under it at its next sign-in, and `keys status` says when an older key can go:");
    println!("PASSWORD_PEPPER_KEYS={}", current.to_spec());
    Ok(())
}

/// `keys rotate`: a new key, first in the ring.
fn rotate_ring(which: RingName) -> anyhow::Result<()> {
    if std::env::var("APP_ENV").as_deref() != Ok("production") {
        let _ = dotenvy::dotenv();
    }
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let given = match (var(which.variable()), which.single_variable().and_then(var)) {
        (Some(_), Some(_)) => anyhow::bail!(
            "{} and {} are both set: keep only {}",
            which.variable(),
            which.single_variable().unwrap_or_default(),
            which.variable()
        ),
        (Some(spec), None) => Some(which.parse(&spec, false)?),
        (None, Some(key)) => Some(which.parse(&key, true)?),
        (None, None) => None,
    };
    let next_step = match which {
        RingName::Data => "run `keys rewrap`",
        RingName::BlindIndex => "run `keys reindex`",
        RingName::Codes => {
            "nothing to run: codes already issued keep verifying under their own key, and `keys status` says when the old key can go"
        }
    };
    match given {
        Some(ring) => {
            let rotated = which.rotate(&ring)?;
            let (new_id, new_key) = rotated.primary();
            // Known to every process before any process uses it: a process
            // without the new key could not read what another wrote
            // under it (and for index keys, could not see an address
            // another process indexed under it).
            let staged = KeyRing::parse(&format!(
                "{},{new_id}:{}",
                ring.to_spec(),
                new_key.to_base64()
            ))?;
            eprintln!(
                "new key {new_id}; store the two {} values below in order (replacing any {}), each followed by a restart of every process:",
                which.variable(),
                which.single_variable().unwrap_or(which.variable()),
            );
            println!("# 1. every process learns key {new_id}, still unused:");
            println!("{}={}", which.variable(), staged.to_spec());
            println!("# 2. then key {new_id} becomes current; afterwards {next_step}:");
            println!("{}={}", which.variable(), rotated.to_spec());
        }
        None => {
            let data_dir = std::env::var("DATA_DIR").unwrap_or_else(|_| ".data".into());
            let id = mobile_backend::keys::rotate_dev_keys(std::path::Path::new(&data_dir), which)?;
            println!(
                "development key {id} added as current to {} in {data_dir}/dev-keys.json; {next_step}",
                which.variable()
            );
        }
    }
    Ok(())
}

/// `keys rewrap`, `keys reindex` and `keys status`: they read the database.
async fn keys_with_database(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    let pool = startup::connect(&config).await?;
    startup::migrate(&config, &pool).await?;
    let keys = Keys::load(&config)?;
    match command {
        KeysCommand::Rewrap { batch } => {
            use mobile_backend::rewrap;
            let batch = batch.clamp(1, 10_000);
            let current = keys.data.primary_id();
            let clock = mobile_backend::clock::Clock::system();
            let outcome = rewrap::run(
                &pool,
                &keys.data,
                batch,
                || clock.now(),
                |line| println!("{line}"),
            )
            .await?;
            if !outcome.complete() {
                for bad in &outcome.unreadable {
                    eprintln!(
                        "NOT REWRAPPED: {} row {}: {}",
                        bad.what, bad.row, bad.reason
                    );
                }
                anyhow::bail!(
                    "not done: {} values do not open and {} remain not under master key {current} (see above and `keys status`); keep every older master key in DATA_KEYS until nothing is left under it",
                    outcome.unreadable.len(),
                    outcome.per_kind.iter().map(|(_, _, left)| left).sum::<u64>()
                );
            }
            println!("done: every user key, queued mail and sealed refresh successor is sealed under master key {current}; older master keys can leave DATA_KEYS once no backup you keep needs them");
        }
        KeysCommand::Reindex { batch_size } => {
            use mobile_backend::reindex::{self, Column};
            let batch = batch_size.clamp(1, 10_000);
            let current = keys.blind_index.current_id();
            for column in Column::ALL {
                let mut total = 0;
                loop {
                    let step = reindex::reindex_batch(&pool, &keys, column, batch).await?;
                    total += step.reindexed;
                    println!(
                        "{}: reindexed {total} under index key {current}; {} remaining",
                        column.name(),
                        step.remaining
                    );
                    if step.remaining == 0 {
                        break;
                    }
                    if step.reindexed == 0 {
                        // Every remaining row is locked by another run or a request.
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            }
            println!(
                "done: every stored value is indexed under index key {current}; sessions bound to an app install id keep their key until they end (see `keys status`)"
            );
        }
        KeysCommand::Status => {
            let mut conn = pool.acquire().await?;
            let usage = mobile_backend::rewrap::usage(&mut conn, &keys.data).await?;
            for line in mobile_backend::rewrap::report(&keys.data, &usage) {
                println!("{line}");
            }
            let now = mobile_backend::clock::Clock::system().now();
            let index = mobile_backend::reindex::index_usage(&mut conn, now).await?;
            let codes = mobile_backend::reindex::code_usage(&mut conn, now).await?;
            for line in mobile_backend::reindex::report(&keys, &index, &codes) {
                println!("{line}");
            }
            let peppers =
                mobile_backend::accounts::db::password_hashes_by_pepper(&mut conn).await?;
            for line in mobile_backend::accounts::password::pepper_report(
                config.keys.password_pepper_keys.as_ref(),
                &peppers,
            ) {
                println!("{line}");
            }
        }
        KeysCommand::Generate | KeysCommand::GenerateSigning | KeysCommand::Rotate { .. } => {}
    }
    Ok(())
}

async fn admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    use mobile_backend::admin::bootstrap;
    let pool = startup::connect(&config).await?;
    startup::migrate(&config, &pool).await?;
    let keys = Keys::load(&config)?;
    match command {
        AdminCommand::Create { email, role } => {
            let password = read_password()?;
            let created =
                bootstrap::create(&pool, &config, &keys, &email, &password, role.into()).await?;
            println!("created account {}", created.user_id);
            if let Some(totp) = created.totp {
                // Shown once, on stdout only: add it to an authenticator app
                // and store the recovery codes offline.
                println!("two-factor authentication is on (staff roles require it)");
                println!("otpauth_uri: {}", totp.otpauth_uri);
                println!("totp_secret: {}", totp.secret_base32);
                println!("recovery_codes:");
                for code in &totp.recovery_codes {
                    println!("  {code}");
                }
                println!(
                    "these are shown only now: add the secret to an authenticator app and keep the recovery codes offline"
                );
            }
        }
        AdminCommand::Promote { email, role } => {
            let id = bootstrap::promote(&pool, &keys, &email, role.into()).await?;
            println!("account {id} now has role {}", Role::from(role).as_str());
        }
    }
    Ok(())
}

/// Prompts twice without echo on a terminal; otherwise reads one line.
fn read_password() -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::io::{BufRead, IsTerminal};
    if std::io::stdin().is_terminal() {
        let first = zeroize::Zeroizing::new(rpassword::prompt_password("Password: ")?);
        let again = zeroize::Zeroizing::new(rpassword::prompt_password("Repeat: ")?);
        anyhow::ensure!(*first == *again, "the passwords differ");
        return Ok(first);
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    anyhow::ensure!(!trimmed.is_empty(), "no password on stdin");
    Ok(trimmed)
}

/// In development without `DATABASE_URL`, start the project-local cluster.
async fn ensure_database(config: &mut Config) -> anyhow::Result<Option<LocalPostgres>> {
    if config.database_url.is_some() || config.app_env == AppEnv::Production {
        return Ok(None);
    }
    let pg = LocalPostgres::start_or_reuse(&config.data_dir.join("postgres")).await?;
    dev_db::ensure_database(&pg.url("postgres"), "mobile_backend").await?;
    config.database_url = Some(SecretString::from(pg.url("mobile_backend")));
    tracing::warn!(
        port = pg.port(),
        "no DATABASE_URL: using the development PostgreSQL under {}",
        pg.data_dir().display()
    );
    Ok(Some(pg))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let shutdown = startup::shutdown_signal()?;
    let app = Application::build(config).await?;
    tracing::info!(
        api = %app.local_addr()?,
        metrics = %app.metrics_addr()?,
        "serving"
    );
    app.run_until(shutdown).await
}

async fn audit(config: Config, command: AuditCommand) -> anyhow::Result<()> {
    use mobile_backend::audit::chain::{self, Verification};
    let pool = startup::connect(&config).await?;
    startup::migrate(&config, &pool).await?;
    match command {
        AuditCommand::Seal => {
            let mut total = 0;
            loop {
                let n = chain::seal_pending(&pool, 0.0).await?;
                total += n;
                if n == 0 {
                    break;
                }
            }
            match chain::head(&pool).await? {
                Some(head) => println!("sealed {total} rows; chain head {head}"),
                None => println!("sealed {total} rows"),
            }
            Ok(())
        }
        AuditCommand::Verify { anchors } => match chain::verify_anchored(&pool, &anchors).await? {
            Verification::Intact { rows, unsealed } => {
                println!(
                    "audit chain intact: {rows} sealed rows verified, {unsealed} not sealed yet"
                );
                if !anchors.is_empty() {
                    println!("the chain holds every anchor given ({})", anchors.len());
                }
                if let Some(head) = chain::head(&pool).await? {
                    println!("chain head {head} (keep it outside the database; pass it later as --anchor)");
                }
                Ok(())
            }
            Verification::Broken {
                chain_pos,
                audit_event_id,
                reason,
            } => {
                anyhow::bail!(
                    "audit chain broken at position {chain_pos} (audit event {audit_event_id}): {reason}"
                )
            }
            Verification::AnchorMismatch { anchor, reason } => {
                anyhow::bail!("audit chain does not hold anchor {anchor}: {reason}")
            }
        },
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let pool = startup::connect(&config).await?;
    startup::migrate(&config, &pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}
