//! The `mobile-backend` command: `serve` (the default), `migrate`,
//! `keys generate` and `tls-pins`.
//!
//! Start-up failures print one clear line per problem and exit non-zero;
//! secrets are never printed.

use clap::{Parser, Subcommand};
use mobile_backend::{
    config::{AppEnv, Config},
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
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the chain and report the first broken link (exit 1 if any).
    Verify,
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
    if let Some(Command::Keys(keys_command)) = &cli.command {
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
        Command::Keys(_) | Command::TlsPins(_) => Ok(()),
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
    }
    Ok(())
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
    startup::MIGRATOR.run(&pool).await?;
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
            println!("sealed {total} rows");
            Ok(())
        }
        AuditCommand::Verify => {
            match chain::verify(&pool).await? {
                Verification::Intact { rows, unsealed } => {
                    println!("audit chain intact: {rows} sealed rows verified, {unsealed} not sealed yet");
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
            }
        }
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let pool = startup::connect(&config).await?;
    startup::MIGRATOR.run(&pool).await?;
    tracing::info!("migrations applied");
    Ok(())
}
