//! Development only: a project-local PostgreSQL cluster, so `cargo run` on
//! a fresh clone serves the API with nothing configured.
//!
//! The cluster lives under `$DATA_DIR/postgres`, listens on 127.0.0.1 only
//! (no Unix socket), on a free port, with SCRAM password authentication and
//! a random password kept beside it (mode 0600). PostgreSQL refuses to run
//! as root, so when we are root (containers, CI) the server runs as the
//! `postgres` system user. The test harness uses the same code for its
//! throwaway clusters (`ephemeral`: durability switched off for speed).

use anyhow::{bail, Context};
use std::{
    fs,
    net::TcpListener,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};
use tokio::process::Command;

const SUPERUSER: &str = "postgres";

/// How to install what is missing, printed when no server binaries exist.
pub const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl) were not found. \
Install them (Debian/Ubuntu: `apt-get install postgresql`; Fedora: `dnf install postgresql-server`; \
macOS: `brew install postgresql@16`), or set DATABASE_URL to an existing server, \
or run everything with `docker compose up`.";

/// A local cluster managed by this process.
#[derive(Debug)]
pub struct LocalPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    port: u16,
    password: String,
    run_as: Option<(u32, u32)>,
}

/// Finds the directory holding `initdb` and `pg_ctl`: `pg_config
/// --bindir`, then the usual install paths in [`candidate_dirs`]'s order,
/// then `PATH`.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Ok(dir);
        }
    }
    candidate_dirs(Path::new("/"), std::env::var_os("PATH").as_deref())
        .into_iter()
        .find(|d| has_tools(d))
        .ok_or_else(|| anyhow::anyhow!(INSTALL_HINT))
}

fn has_tools(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// Where server binaries are looked for, in order, under `root` (`/`; a
/// scratch directory in the tests), then the directories of `path`:
///
/// 1. Debian and Ubuntu: `/usr/lib/postgresql/<N>/bin`, then
///    `/usr/local/lib/postgresql/<N>/bin`, newest `N` first.
/// 2. Homebrew's keg-only formulae (`brew install postgresql@16` does not
///    link `initdb` into `bin`): `/opt/homebrew/opt/postgresql@<N>/bin`
///    (Apple silicon), then `/usr/local/opt/postgresql@<N>/bin` (Intel),
///    newest `N` first, each followed by its unversioned `postgresql`.
/// 3. Postgres.app: `/Applications/Postgres.app/Contents/Versions/latest/bin`.
/// 4. `/usr/local/pgsql/bin` (built from source), `/opt/homebrew/bin`,
///    `/usr/local/bin`, `/usr/pgsql/bin`.
/// 5. `PATH`.
pub fn candidate_dirs(root: &Path, path: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    // The entries of `dir` named `<prefix><N>`, newest N first.
    let versions = |dir: &Path, prefix: &str| -> Vec<(u32, PathBuf)> {
        let mut found: Vec<(u32, PathBuf)> = fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let v = name.strip_prefix(prefix)?.parse::<u32>().ok()?;
                        Some((v, e.path()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort_by_key(|v| std::cmp::Reverse(v.0));
        found
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    for dir in ["/usr/lib/postgresql", "/usr/local/lib/postgresql"] {
        candidates.extend(
            versions(&at(dir), "")
                .into_iter()
                .map(|(_, p)| p.join("bin")),
        );
    }
    for opt in ["/opt/homebrew/opt", "/usr/local/opt"] {
        let opt = at(opt);
        candidates.extend(
            versions(&opt, "postgresql@")
                .into_iter()
                .map(|(_, p)| p.join("bin")),
        );
        candidates.push(opt.join("postgresql").join("bin"));
    }
    candidates.push(at(
        "/Applications/Postgres.app/Contents/Versions/latest/bin",
    ));
    candidates.extend(
        [
            "/usr/local/pgsql/bin",
            "/opt/homebrew/bin",
            "/usr/local/bin",
            "/usr/pgsql/bin",
        ]
        .map(at),
    );
    if let Some(path) = path {
        candidates.extend(std::env::split_paths(path));
    }
    candidates
}

impl LocalPostgres {
    /// Starts the cluster in `data_dir` (creating it on first use), or
    /// reuses it when it is already running.
    pub async fn start_or_reuse(data_dir: &Path) -> anyhow::Result<Self> {
        Self::open(data_dir, false).await
    }

    /// A disposable cluster: fsync off, for tests.
    pub async fn start_ephemeral(data_dir: &Path) -> anyhow::Result<Self> {
        Self::open(data_dir, true).await
    }

    async fn open(data_dir: &Path, ephemeral: bool) -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir()?;
        let run_as = server_user()?;
        let parent = data_dir
            .parent()
            .context("the cluster directory needs a parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let password = load_or_create_password(&parent.join("postgres.password"))?;
        let mut pg = Self {
            bin_dir,
            data_dir: data_dir.to_path_buf(),
            port: 0,
            password,
            run_as,
        };
        if !data_dir.join("PG_VERSION").exists() {
            pg.init(ephemeral).await?;
        }
        if let Some(port) = pg.running_port().await {
            pg.port = port;
            tracing::info!(port, "reusing the running development PostgreSQL");
        } else {
            pg.port = free_port()?;
            pg.start().await?;
        }
        Ok(pg)
    }

    async fn init(&self, ephemeral: bool) -> anyhow::Result<()> {
        tracing::info!(dir = %self.data_dir.display(), "creating a local PostgreSQL cluster");
        fs::create_dir_all(&self.data_dir)?;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700))?;
        let pwfile = self.data_dir.with_extension("pwfile");
        write_private(&pwfile, self.password.as_bytes())?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.data_dir, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let result = self
            .run(
                "initdb",
                &[
                    "-D".as_ref(),
                    self.data_dir.as_os_str(),
                    "-U".as_ref(),
                    SUPERUSER.as_ref(),
                    "--auth=scram-sha-256".as_ref(),
                    format!("--pwfile={}", pwfile.display()).as_ref(),
                    "-E".as_ref(),
                    "UTF8".as_ref(),
                    "--locale=C".as_ref(),
                ],
            )
            .await;
        let _ = fs::remove_file(&pwfile);
        result?;
        let mut settings = String::from(
            "\n# mobile-backend development cluster\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nmax_connections = 300\n",
        );
        if ephemeral {
            settings.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let conf = self.data_dir.join("postgresql.conf");
        let mut existing = fs::read_to_string(&conf)?;
        existing.push_str(&settings);
        fs::write(&conf, existing)?;
        Ok(())
    }

    /// Starts the server on its port (used again after [`Self::stop`]).
    pub async fn start(&self) -> anyhow::Result<()> {
        let log = self.data_dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                format!("-p {}", self.port).as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        )
        .await
        .with_context(|| format!("starting PostgreSQL (log: {})", log.display()))
    }

    /// Stops the server (fast shutdown: connections are closed).
    pub async fn stop(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        )
        .await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    async fn running_port(&self) -> Option<u16> {
        let status = self
            .command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.data_dir)
            .output()
            .await
            .ok()?;
        if !status.status.success() {
            return None;
        }
        // postmaster.pid: line 4 is the port.
        let pid_file = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        cmd.kill_on_drop(false).stdin(std::process::Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    async fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let out = self
            .command(tool)
            .args(args)
            .output()
            .await
            .with_context(|| format!("running {tool}"))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(())
    }
}

/// A disposable cluster in a new temporary folder that lives as long as
/// the calling process: a watchdog shell stops it and deletes the folder
/// once the process has exited (tests have no reliable hook at exit).
pub async fn start_throwaway() -> anyhow::Result<LocalPostgres> {
    let dir = std::env::temp_dir().join(format!(
        "mobile-backend-pg-{}",
        uuid::Uuid::new_v4().simple()
    ));
    fs::create_dir_all(&dir)?;
    // The server may run as `postgres` (when we are root): let it in.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let data = dir.join("data");
    let pg = LocalPostgres::start_ephemeral(&data).await?;
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         kill -QUIT $(head -1 '{data}/postmaster.pid') 2>/dev/null; sleep 2; rm -rf '{dir}'",
        pid = std::process::id(),
        data = data.display(),
        dir = dir.display(),
    );
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting the cluster watchdog")?;
    Ok(pg)
}

/// Creates `name` on the cluster behind `admin_url` unless it exists.
pub async fn ensure_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        // Identifiers cannot be bound; the name is checked to be plain.
        anyhow::ensure!(
            name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "database name must be [A-Za-z0-9_]"
        );
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
    }
    Ok(())
}

/// PostgreSQL will not run as root; as root we run it as `postgres`.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name(SUPERUSER)? {
        Some(user) => Ok(Some((user.uid.as_raw(), user.gid.as_raw()))),
        None => bail!(
            "running as root, and PostgreSQL refuses to run as root: create a `postgres` system user \
             (installing the postgresql package does) or set DATABASE_URL"
        ),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn load_or_create_password(path: &Path) -> anyhow::Result<String> {
    if let Ok(existing) = fs::read_to_string(path) {
        if !existing.trim().is_empty() {
            return Ok(existing.trim().to_owned());
        }
    }
    let password = crate::crypto::random::token(24);
    write_private(path, password.as_bytes())?;
    Ok(password)
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn server_at(root: &Path, dir: &str) -> PathBuf {
        let bin = root.join(dir);
        fs::create_dir_all(&bin).unwrap();
        for tool in ["initdb", "pg_ctl"] {
            fs::write(bin.join(tool), b"").unwrap();
        }
        bin
    }

    #[test]
    fn the_search_order_covers_debian_homebrew_kegs_and_postgres_app() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let on_path = root.join("on-path");
        let dirs = [
            "usr/lib/postgresql/16/bin",
            "usr/lib/postgresql/9/bin",
            "opt/homebrew/opt/postgresql@16/bin",
            "opt/homebrew/opt/postgresql@17/bin",
            "usr/local/opt/postgresql@16/bin",
            "Applications/Postgres.app/Contents/Versions/latest/bin",
            "opt/homebrew/bin",
        ];
        for dir in dirs {
            server_at(root, dir);
        }
        let found: Vec<PathBuf> = candidate_dirs(root, Some(on_path.as_os_str()))
            .into_iter()
            .filter(|d| has_tools(d) || *d == on_path)
            .collect();
        let expected: Vec<PathBuf> = [
            "usr/lib/postgresql/16/bin",
            "usr/lib/postgresql/9/bin",
            "opt/homebrew/opt/postgresql@17/bin",
            "opt/homebrew/opt/postgresql@16/bin",
            "usr/local/opt/postgresql@16/bin",
            "Applications/Postgres.app/Contents/Versions/latest/bin",
            "opt/homebrew/bin",
            "on-path",
        ]
        .iter()
        .map(|d| root.join(d))
        .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn on_a_mac_without_debian_paths_the_homebrew_keg_comes_before_postgres_app() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let app = server_at(
            root,
            "Applications/Postgres.app/Contents/Versions/latest/bin",
        );
        let intel = server_at(root, "usr/local/opt/postgresql@16/bin");
        let first = |root: &Path| {
            candidate_dirs(root, None)
                .into_iter()
                .find(|d| has_tools(d))
        };
        assert_eq!(first(root), Some(intel.clone()));
        fs::remove_dir_all(&intel).unwrap();
        assert_eq!(first(root), Some(app));
        // A keg directory without the tools is passed over.
        fs::create_dir_all(root.join("opt/homebrew/opt/postgresql@18/bin")).unwrap();
        assert_eq!(
            first(root),
            Some(root.join("Applications/Postgres.app/Contents/Versions/latest/bin"))
        );
    }
}
