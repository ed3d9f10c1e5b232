//! `streamctl`: produce, consume and administer a Quiver cluster from the shell.
//!
//! Errors are one line on stderr, `streamctl: <message>`, with exit code 1; usage errors exit
//! with 2; a consume stopped by SIGINT or SIGTERM exits with 130 or 143.
//!
//! Files: `args.rs` the command line; `produce.rs`, `consume.rs`, `topic.rs`, `group.rs`,
//! `user.rs`, `acl.rs` one command family each; `from.rs` and `start.rs` where consume starts (parsing, then placing
//! in each partition's range); `text.rs` and `json.rs` records as text lines, templates and
//! JSON lines, each format written and read in one file; `output.rs` tables and JSON of the
//! admin commands.

use std::time::Duration;

use clap::{CommandFactory, Parser};
use quiver_client::transport::DEV_CA_PATH;
use quiver_client::{Client, ClientConfig, ClientTls, Error};
use quiver_tools::credentials::{self, PasswordEnv};

mod acl;
mod args;
mod consume;
mod from;
mod group;
mod json;
mod output;
mod produce;
mod quota;
mod start;
mod text;
mod topic;
mod user;

use acl::acl;
use args::{Cli, ClusterCommand, Command};
use consume::consume;
use group::group;
use produce::produce;
use topic::{cluster, topic};
use user::user;

fn main() {
    let cli = Cli::parse();
    if let Some(conflict) = cli.conflict() {
        Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, conflict)
            .exit();
    }
    if let Command::Acl(a) = &cli.command {
        if let Err(e) = acl::check(a) {
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, e)
                .exit();
        }
    }
    // Diagnostics on stderr only when asked for (RUST_LOG=quiver_client=debug, ...).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(Exit::Success) => {}
        Ok(Exit::Code(code)) => std::process::exit(code),
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ! {
    // One line, whatever the message holds.
    let line = message.replace('\n', " ");
    eprintln!("streamctl: {line}");
    std::process::exit(1);
}

pub type CliResult<T = ()> = Result<T, String>;

/// How a command that did not fail ends.
pub enum Exit {
    Success,
    /// Stopped by a signal: 128 + its number, as a shell reports it.
    Code(i32),
}

async fn connect(cli: &Cli) -> CliResult<Client> {
    let mut tls = match &cli.ca_file {
        Some(path) => ClientTls::from_ca_file(path).map_err(|e| e.to_string())?,
        None if !std::path::Path::new(DEV_CA_PATH).exists() => {
            return Err(format!(
                "no CA file to trust: pass --ca-file <PEM> (or set STREAMCTL_CA_FILE) with the \
                 broker's CA certificate; without it streamctl trusts ./{DEV_CA_PATH}, the \
                 development CA that a streamd started with no flags writes to its data \
                 directory (<data_dir>/tls/ca.pem, ./data by default), so run streamctl from \
                 the directory streamd was started in or pass --ca-file <that dir>/{DEV_CA_PATH}"
            ))
        }
        None => ClientTls::dev_default().map_err(|e| e.to_string())?,
    };
    if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
        tls = tls.with_client_cert(cert, key).map_err(|e| e.to_string())?;
    }
    let mut config = ClientConfig::new(&cli.bootstrap)
        .tls(tls)
        .request_timeout(cli.request_timeout)
        .client_id(format!("streamctl/{}", env!("CARGO_PKG_VERSION")));
    config.connect.connect_timeout = cli.request_timeout.min(Duration::from_secs(5));
    config.sasl = credentials::login(
        cli.user.as_deref(),
        cli.password_file.as_deref(),
        PasswordEnv::read("STREAMCTL_PASSWORD"),
        cli.sasl_mechanism,
    )?;
    Client::connect(config).await.map_err(|e| match e {
        Error::Authentication { .. } => format!("cannot log in at {}: {e}", cli.bootstrap),
        e => format!("cannot reach a broker at {}: {e}", cli.bootstrap),
    })
}

async fn run(cli: Cli) -> CliResult<Exit> {
    let client = connect(&cli).await?;
    let success = |r: CliResult| r.map(|()| Exit::Success);
    let result = match &cli.command {
        Command::Produce(a) => success(produce(&client, a).await),
        Command::Consume(a) => consume(&client, a).await,
        Command::Topic(t) => success(topic(&client, t).await),
        Command::Cluster(ClusterCommand::Describe { out }) => success(cluster(&client, *out).await),
        Command::Group(g) => success(group(&client, g).await),
        Command::User(u) => success(user(&client, u).await),
        Command::Acl(a) => success(acl(&client, a).await),
        Command::Quota(q) => success(quota::quota(&client, q).await),
    };
    client.close().await;
    result
}
