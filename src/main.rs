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
    keys::Keys,
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
    /// Print a fresh set of DATA_KEYS, BLIND_INDEX_KEY and CODE_HMAC_KEY
    /// lines for a production environment (to stdout, nothing is stored).
    Generate,
    /// Print a new Ed25519 access-token signing key (PKCS#8 PEM). To rotate,
    /// put it first in SIGNING_KEYS and keep the old key after it until the
    /// longest access-token lifetime has passed.
    GenerateSigning,
    /// Add a new master data key as current. With DATA_KEYS set, prints the
    /// new DATA_KEYS value to store in your secret manager (nothing is
    /// written); in development, updates $DATA_DIR/dev-keys.json. Then run
    /// `keys rewrap`.
    Rotate,
    /// Re-wrap every user data key under the current master key, in
    /// batches (resumable, safe while the service serves). Afterwards the
    /// old master keys can be removed from DATA_KEYS.
    Rewrap {
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// How many user data keys each master key still wraps.
    Status,
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
        keys_command @ (KeysCommand::Generate | KeysCommand::GenerateSigning | KeysCommand::Rotate),
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
            println!("BLIND_INDEX_KEY={}", keys.blind_index.to_base64());
            println!("CODE_HMAC_KEY={}", keys.codes.to_base64());
        }
        KeysCommand::GenerateSigning => print!("{}", SigningKeys::generate_pem()?),
        KeysCommand::Rotate => rotate_master_key()?,
        KeysCommand::Rewrap { .. } | KeysCommand::Status => {}
    }
    Ok(())
}

/// `keys rotate`: a new master key, first in the ring.
fn rotate_master_key() -> anyhow::Result<()> {
    if std::env::var("APP_ENV").as_deref() != Ok("production") {
        let _ = dotenvy::dotenv();
    }
    match std::env::var("DATA_KEYS") {
        Ok(spec) => {
            let ring = KeyRing::parse(&spec)?;
            let rotated = mobile_backend::keys::rotated(&ring)?;
            eprintln!(
                "new master key {} added as current; store this DATA_KEYS, restart the service, then run `keys rewrap`:",
                rotated.primary_id()
            );
            println!("DATA_KEYS={}", rotated.to_spec());
        }
        Err(_) => {
            let data_dir = std::env::var("DATA_DIR").unwrap_or_else(|_| ".data".into());
            let id = mobile_backend::keys::rotate_dev_keys(std::path::Path::new(&data_dir))?;
            println!("development master key {id} added as current in {data_dir}/dev-keys.json; run `keys rewrap`");
        }
    }
    Ok(())
}

/// `keys rewrap` and `keys status`: they read the database.
async fn keys_with_database(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    use mobile_backend::user_keys;
    let pool = startup::connect(&config).await?;
    startup::migrate(&config, &pool).await?;
    let keys = Keys::load(&config)?;
    match command {
        KeysCommand::Rewrap { batch } => {
            let batch = batch.clamp(1, 10_000);
            let current = keys.data.primary_id();
            let mut total = 0;
            loop {
                let now = mobile_backend::clock::Clock::system().now();
                let step = user_keys::rewrap_batch(&pool, &keys.data, batch, now).await?;
                total += step.rewrapped;
                println!(
                    "rewrapped {total} user keys under master key {current}; {} remaining",
                    step.remaining
                );
                if step.remaining == 0 {
                    break;
                }
                if step.rewrapped == 0 {
                    // Every remaining row is locked by another rewrap run.
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            println!("done: every user key is wrapped by master key {current}; older master keys can leave DATA_KEYS once no backup you keep needs them");
        }
        KeysCommand::Status => {
            let mut conn = pool.acquire().await?;
            let counts = user_keys::status(&mut conn).await?;
            println!("current master key: {}", keys.data.primary_id());
            for (id, n) in counts {
                let note = if id == keys.data.primary_id() {
                    "current"
                } else if keys.data.get(id).is_some() {
                    "older, in DATA_KEYS: run `keys rewrap`"
                } else {
                    "MISSING from DATA_KEYS: these users' data cannot be read"
                };
                println!("master key {id}: {n} user keys ({note})");
            }
        }
        KeysCommand::Generate | KeysCommand::GenerateSigning | KeysCommand::Rotate => {}
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
