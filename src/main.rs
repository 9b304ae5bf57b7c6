//! The `mailsflux` command line (API.md, "Command line and configuration").
//!
//! Exit codes: 0 success, 2 usage or configuration error (naming the setting), 1 other
//! failure.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mailsflux::config::DatabaseConfig;
use mailsflux::keys::{self, Mode, Permission};
use mailsflux::store::{Db, StoreError, time};
use mailsflux::{Application, Config};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "mailsflux",
    version,
    about = "Self-hosted email and physical-mail API: one binary, one SQLite file.",
    long_about = "Self-hosted email and physical-mail API: one binary, one SQLite file.\n\n\
        Settings come from ./mailsflux.toml (or --config FILE) and MAILSFLUX_<SECTION>__<KEY> \
        environment variables; every setting has a default that works on a laptop."
)]
struct Cli {
    /// Configuration file (default: ./mailsflux.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API, the dashboard and the background workers.
    Serve,
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage dashboard administrators.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage audience contacts.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// Create or upgrade the database schema, then exit.
    Migrate,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an administrator; asks for the password (or reads MAILSFLUX_ADMIN_PASSWORD).
    Create {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum ContactsCommand {
    /// Import a CSV file into an audience (header row: email, first_name, last_name; other
    /// columns go into each contact's data). Upserts by email; reports skipped rows.
    Import {
        /// The audience's id (aud_...).
        #[arg(long)]
        audience: String,
        /// The CSV file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints the key alone on standard output (shown once).
    Create(CreateKey),
    /// List keys (never their secrets).
    List,
    /// Revoke a key by its id (key_...); it stops working within 5 seconds.
    Revoke {
        /// The key's id, as `keys list` shows it.
        key_id: String,
    },
}

#[derive(Args)]
struct CreateKey {
    /// A name to tell the key apart (e.g. "ci", "production app").
    #[arg(long)]
    name: String,
    #[arg(long, value_enum, default_value = "test")]
    mode: ModeArg,
    #[arg(long, value_enum, default_value = "full_access")]
    permission: PermissionArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Live,
    Test,
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum PermissionArg {
    FullAccess,
    SendingAccess,
}

/// glibc's allocator tuned for a server's RSS.
///
/// At most four malloc arenas. By default glibc gives busy threads their own arena
/// (up to 8 per core) and keeps each one's freed memory, so the blocking threads of a busy
/// server added megabytes of RSS each (72 MB after the ingest benchmark). Two arenas kept
/// it at 48 MB, but then the database writer shared an arena with the threads that build
/// messages, and waited on its lock: a tenth of the writer's time in batch profiles, and
/// 15% fewer emails/s than with four. Four, with the trim after bursts (`ops::memory`),
/// measured 41-44 MB a second after the ingest benchmark; its peak is higher (74-76 MB
/// against 65-68 MB with two), which is the price of the writer's own arena.
///
/// And a fixed mmap threshold of 256 KB: blocks that large are mapped on their own and go
/// back to the system when freed. glibc raises the threshold to the size of each mapped
/// block freed (up to 32 MB), so after one large buffer (the indexer's copy of a pass,
/// about 1 MB) the megabytes of batch bodies and parsed batches came from the arenas
/// instead and left pages there that `malloc_trim` cannot give back: 47-59 MB a second
/// after the ingest benchmark, 44-53 MB with the fixed threshold (39-46 before the copy
/// had a buffer of its own; see `emails::indexer::catch_up` for the reader's cache).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; it runs before any thread is started.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    init_logging();
    let command = match cli.command {
        Command::Serve => {
            return match Config::load(cli.config.as_deref()) {
                Ok(config) => serve(config),
                Err(e) => {
                    eprintln!("mailsflux: {e}");
                    ExitCode::from(2)
                }
            };
        }
        other => other,
    };
    // The one-shot commands only read [database]: a bad setting elsewhere stops `serve`.
    let database = match Config::load_database(cli.config.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("mailsflux: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Serve | Command::Migrate => with_db(&database, |db| {
            eprintln!(
                "mailsflux: the database {} is up to date",
                db.path().display()
            );
            Ok(())
        }),
        Command::Keys(cmd) => keys_command(&database, cmd),
        Command::Admin(AdminCommand::Create { email }) => admin_create(&database, &email),
        Command::Contacts(ContactsCommand::Import { audience, file }) => {
            import_contacts(&database, &audience, &file)
        }
    }
}

/// The password for `admin create`: MAILSFLUX_ADMIN_PASSWORD, else asked on the terminal
/// (twice, without echo), else one line of standard input.
fn read_admin_password() -> Result<String, String> {
    if let Ok(p) = std::env::var("MAILSFLUX_ADMIN_PASSWORD") {
        return Ok(p);
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Password again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn admin_create(database: &DatabaseConfig, email: &str) -> ExitCode {
    use mailsflux::dashboard::session;
    let password = match read_admin_password() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mailsflux: cannot read the password: {e}");
            return ExitCode::from(1);
        }
    };
    let email = match session::check_new_admin(email, &password) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("mailsflux: {e}");
            return ExitCode::from(2);
        }
    };
    let hash = match session::hash_password(&password) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("mailsflux: {e}");
            return ExitCode::from(1);
        }
    };
    let db = match open_db(database) {
        Ok(db) => db,
        Err(code) => return code,
    };
    let e2 = email.clone();
    let created = db.write_blocking(move |c| session::create_admin(c, &e2, &hash));
    db.close();
    match created {
        Ok(_) => {
            eprintln!("mailsflux: administrator {email} created; sign in at /dashboard");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mailsflux: {e}");
            ExitCode::from(1)
        }
    }
}

/// `contacts import`: a progress bar on standard error, then the figures and every skipped
/// row (line number and reason). Exit 1 when nothing could be imported.
fn import_contacts(config: &DatabaseConfig, audience: &str, path: &std::path::Path) -> ExitCode {
    if let Err(code) = require_existing_db(config) {
        return code;
    }
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mailsflux: cannot open {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:40}] {bytes}/{total_bytes} ({eta} left) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let db = match open_db(config) {
        Ok(db) => db,
        Err(code) => return code,
    };
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    let result =
        mailsflux::audiences::import::import(&db, audience, reader, |pos| bar.set_position(pos));
    bar.finish_and_clear();
    db.close();
    match result {
        Ok(report) => {
            eprintln!(
                "mailsflux: {} rows read: {} contacts created, {} updated, {} rows skipped",
                report.rows,
                report.created,
                report.updated,
                report.skipped.len()
            );
            for (line, why) in &report.skipped {
                eprintln!("  skipped line {line}: {why}");
            }
            if report.rows > 0 && report.created + report.updated == 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("mailsflux: import stopped: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MAILSFLUX_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Colours only on a terminal: in a file, journald or `docker logs` the escape codes
    // are noise around every field.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Refuses a command that only reads or changes what is already stored when there is no
/// database yet: run in the wrong directory, or with the setting unset, it would otherwise
/// create an empty database there and answer as if nothing had ever been stored.
fn require_existing_db(config: &DatabaseConfig) -> Result<(), ExitCode> {
    if config.path.exists() {
        return Ok(());
    }
    eprintln!(
        "mailsflux: there is no database at {} (the setting database.path, env {}); \
         `mailsflux serve` or `mailsflux migrate` creates it",
        config.path.display(),
        mailsflux::config::env_name("database.path")
    );
    Err(ExitCode::from(1))
}

/// Opens the database (migrating it) for a one-shot command, or says why it cannot.
fn open_db(config: &DatabaseConfig) -> Result<Db, ExitCode> {
    Db::open(config).map_err(|e| {
        eprintln!(
            "mailsflux: cannot open the database {}: {e}",
            config.path.display()
        );
        ExitCode::from(1)
    })
}

/// Runs `f` on the database for a one-shot command, closes it, and turns the outcome into
/// the exit code.
fn with_db(config: &DatabaseConfig, f: impl FnOnce(&Db) -> Result<(), StoreError>) -> ExitCode {
    let db = match open_db(config) {
        Ok(db) => db,
        Err(code) => return code,
    };
    let result = f(&db);
    db.close();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailsflux: {e}");
            ExitCode::from(1)
        }
    }
}

fn keys_command(config: &DatabaseConfig, cmd: KeysCommand) -> ExitCode {
    match cmd {
        KeysCommand::Create(args) => {
            let mode = match args.mode {
                ModeArg::Live => Mode::Live,
                ModeArg::Test => Mode::Test,
            };
            let permission = match args.permission {
                PermissionArg::FullAccess => Permission::FullAccess,
                PermissionArg::SendingAccess => Permission::SendingAccess,
            };
            if args.name.trim().is_empty() {
                eprintln!("mailsflux: --name must not be empty");
                return ExitCode::from(2);
            }
            with_db(config, |db| {
                let name = args.name.clone();
                let (key, token) =
                    db.write_blocking(move |c| keys::create(c, &name, mode, permission))?;
                eprintln!(
                    "mailsflux: created {} key {} ({}, {}); it is shown once, store it now",
                    key.mode.as_str(),
                    key.id,
                    key.name,
                    key.permission.as_str()
                );
                println!("{token}");
                Ok(())
            })
        }
        KeysCommand::List => {
            if let Err(code) = require_existing_db(config) {
                return code;
            }
            list_keys(config)
        }
        KeysCommand::Revoke { key_id } => {
            if let Err(code) = require_existing_db(config) {
                return code;
            }
            revoke_key(config, &key_id)
        }
    }
}

/// `keys list`: a table on standard output, never a secret.
fn list_keys(config: &DatabaseConfig) -> ExitCode {
    with_db(config, |db| {
        let conn = db.read_blocking()?;
        let list = keys::list(&conn)?;
        println!(
            "{:<32} {:<5} {:<15} {:<21} {:<21} {:<9} NAME",
            "ID", "MODE", "PERMISSION", "CREATED", "LAST USED", "STATUS"
        );
        for k in list {
            println!(
                "{:<32} {:<5} {:<15} {:<21} {:<21} {:<9} {}",
                k.id,
                k.mode.as_str(),
                k.permission.as_str(),
                time::format(k.created_at),
                k.last_used_at.map_or_else(|| "never".into(), time::format),
                if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                },
                k.name
            );
        }
        Ok(())
    })
}

/// `keys revoke`: exit 1 when no active key has that id.
fn revoke_key(config: &DatabaseConfig, key_id: &str) -> ExitCode {
    let db = match open_db(config) {
        Ok(db) => db,
        Err(code) => return code,
    };
    let id = key_id.to_string();
    let revoked = db.write_blocking(move |c| keys::revoke(c, &id));
    db.close();
    match revoked {
        Ok(true) => {
            eprintln!("mailsflux: revoked {key_id}; it stops working within 5 seconds");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("mailsflux: no active key with id {key_id} (see `mailsflux keys list`)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("mailsflux: {e}");
            ExitCode::from(1)
        }
    }
}

/// Threads for blocking work (SQLite reads, MIME building) in the main runtime; actix's
/// workers have their own ([`mailsflux::BLOCKING_THREADS_PER_WORKER`]). Tokio's default of
/// 512 lets a burst of requests start dozens of threads, each keeping a malloc arena: on a
/// small machine they add memory and no speed (there are only 8 read connections).
const BLOCKING_THREADS: usize = 16;

fn serve(config: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailsflux: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let listen = config.server.listen;
        let public_url = config.server.public_url.clone();
        let app = match Application::build(config).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("mailsflux: {e}");
                return ExitCode::from(e.exit_code() as u8);
            }
        };
        if let Some(first) = app.first_key() {
            println!(
                "\nmailsflux: this is a new database, so a test-mode API key was created.\n\
                 It is shown only this once; store it now:\n\n    {token}\n\n\
                 Send a test email (test mode captures it; nothing leaves this machine):\n\n    \
                 curl -X POST {public_url}/v1/emails/send \\\n      \
                 -H 'Authorization: Bearer {token}' \\\n      \
                 -H 'Content-Type: application/json' \\\n      \
                 -d '{{\"from\":\"Acme <hello@acme.test>\",\"to\":\"delivered@test.mailsflux\",\"subject\":\"Hello\",\"text\":\"It works\"}}'\n",
                token = first.token
            );
        }
        tracing::info!(%listen, port = app.port(), version = env!("CARGO_PKG_VERSION"), "mailsflux is serving");
        let handle = app.server_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: finishing requests and deliveries under way");
            handle.stop(true).await;
        });
        match app.run_until_stopped().await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mailsflux: {e}");
                ExitCode::from(1)
            }
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
