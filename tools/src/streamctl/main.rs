//! `streamctl`: produce, consume and administer a Quiver cluster from the shell.
//!
//! Errors are one line on stderr, `streamctl: <message>`, with exit code 1; usage errors exit
//! with 2.

use std::time::Duration;

use clap::Parser;
use quiver_client::{Client, ClientConfig, ClientTls};

mod args;
mod consume;
mod group;
mod output;
mod produce;
mod topic;

use args::{Cli, ClusterCommand, Command};
use consume::consume;
use group::group;
use produce::produce;
use topic::{cluster, topic};

fn main() {
    let cli = Cli::parse();
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
        Ok(()) => {}
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

async fn connect(cli: &Cli) -> CliResult<Client> {
    let mut tls = match &cli.ca_file {
        Some(path) => ClientTls::from_ca_file(path).map_err(|e| e.to_string())?,
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
    Client::connect(config)
        .await
        .map_err(|e| format!("cannot reach a broker at {}: {e}", cli.bootstrap))
}

async fn run(cli: Cli) -> CliResult {
    let client = connect(&cli).await?;
    let result = match &cli.command {
        Command::Produce(a) => produce(&client, a).await,
        Command::Consume(a) => consume(&client, a).await,
        Command::Topic(t) => topic(&client, t).await,
        Command::Cluster(ClusterCommand::Describe { out }) => cluster(&client, *out).await,
        Command::Group(g) => group(&client, g).await,
    };
    client.close().await;
    result
}
