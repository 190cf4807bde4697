//! The `broker` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::edge::live::Live;
use crate::edge::router::Router;
use crate::ops::server::Server;

/// A realtime WebSocket message broker whose handlers are WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log format on stderr: `text` for people, `json` for log collectors. Filter with RUST_LOG.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the routes of a broker.toml (the default command).
    Serve(ServeArgs),
    /// Validate a broker.toml and load every plugin it names, without serving; print each problem
    /// with its file and key, and exit non-zero if there is any.
    Check(ConfigArg),
    /// Print the route table of a broker.toml: pattern, plugin, parameters and their rules.
    Routes(ConfigArg),
    /// Load the plugins of a broker.toml and print its AsyncAPI 3.0 document (as served at
    /// /asyncapi.json and /asyncapi.yaml).
    Asyncapi(AsyncapiArgs),
    /// Generate a typed client (TypeScript or Python) from the AsyncAPI document of a broker.toml.
    Client(ClientArgs),
}

#[derive(Debug, clap::Args)]
struct AsyncapiArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "broker.toml")]
    config: PathBuf,
    #[arg(long, value_enum, default_value_t = DocFormat::Yaml)]
    format: DocFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DocFormat {
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "broker.toml")]
    config: PathBuf,
    /// The client's language.
    #[arg(long, value_enum)]
    lang: crate::documents::codegen::Lang,
    /// Write the client to this file instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The configuration file.
    #[arg(long, short, default_value = "broker.toml")]
    config: PathBuf,
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// The configuration file.
    #[arg(long, short, default_value = "broker.toml")]
    config: PathBuf,
    /// Listen on this address instead of `server.listen`; port 0 picks a free port. The bound
    /// address is printed on stdout as `listening on ADDR`.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// Runs the command line; the exit code is 0 on a clean shutdown.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Routes(args)) => return routes(&args.config),
        Some(Command::Check(args)) => return block_on(check(args.config)),
        Some(Command::Asyncapi(args)) => {
            return block_on(print_document(
                args.config,
                |doc| match args.format {
                    DocFormat::Json => {
                        serde_json::to_string_pretty(doc).map(|text| text + "\n").map_err(|e| e.to_string())
                    }
                    DocFormat::Yaml => Ok(crate::documents::asyncapi::to_yaml(doc)),
                },
                None,
            ));
        }
        Some(Command::Client(args)) => {
            let lang = args.lang;
            return block_on(print_document(
                args.config,
                move |doc| crate::documents::codegen::generate(doc, lang).map_err(|e| e.to_string()),
                args.out,
            ));
        }
        None => ServeArgs { config: PathBuf::from("broker.toml"), listen: None },
    };
    give_large_buffers_back();
    block_on(async {
        match serve(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Large buffers (a big frame, the write buffer of a client that stopped reading) are mapped and
/// unmapped on their own, so memory a closed connection held goes back to the system. glibc
/// otherwise raises its mmap threshold after the first large free, and later large buffers stay
/// in its heaps after they are freed: a burst of slow consumers would keep the broker's memory
/// high for good.
#[allow(unsafe_code)] // mallopt is a C function; why it is sound is said at the call.
fn give_large_buffers_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn block_on(work: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(work),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `broker check`: every problem, each on its own line; non-zero when there is one.
async fn check(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match Live::check(config).await {
        Ok(live) => {
            for (name, plugin) in live.generations() {
                println!("plugin {name} {}: accepts {}", plugin.manifest().version, plugin.accepts().join(", "));
            }
            println!("{}: ok ({} routes)", path.display(), live.config.routes.len());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in problems.0 {
                eprintln!("error: {problem}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `broker asyncapi` and `broker client`: loads the plugins, builds the AsyncAPI document and
/// prints what `render` makes of it (to `out` when given).
async fn print_document(
    path: PathBuf,
    render: impl Fn(&crate::documents::asyncapi::model::Document) -> Result<String, String>,
    out: Option<PathBuf>,
) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let live = match Live::check(config).await {
        Ok(live) => live,
        Err(problems) => {
            for problem in problems.0 {
                eprintln!("error: {problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    let document = crate::documents::asyncapi::document(&live.config, &live.generations(), live.config.server.listen);
    let text = match render(&document) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match out {
        None => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Some(file) => match std::fs::write(&file, text) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: cannot write {}: {error}", file.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// `broker routes`: the route table.
fn routes(path: &std::path::Path) -> ExitCode {
    let router = match Config::load(path).and_then(|config| Router::from_config(&config)) {
        Ok(router) => router,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{:<32} {:<16} {:<9} params", "route", "plugin", "metadata");
    for route in router.routes() {
        println!("{:<32} {:<16} {:<9} {}", route.pattern, route.plugin, route.metadata, route.describe_params());
    }
    ExitCode::SUCCESS
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Each connection is a file descriptor: take all the kernel allows this process.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
    }
    let mut config = Config::load(&args.config)?;
    if let Some(listen) = args.listen {
        config.override_listen(listen);
    }
    let server = Server::bind(config).await?;
    let shutdown = shutdown_signal();
    let addr = server.local_addr()?;
    // One line on stdout, for scripts and tests that start us on port 0.
    println!("listening on {addr}");
    tracing::info!(%addr, "serving");
    server.serve(shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a SIGTERM sent right after `listening on` must stop the broker
/// gracefully, not kill it with the default action.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
        async move {
            match handlers {
                Ok((mut interrupt, mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the broker");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
