use quiver_broker::config::{Cli, Config, LogFormat};

/// jemalloc, not glibc's malloc: with 100,000 partitions, an idle partition's state is a dozen
/// small objects made while other logs open and close their files, and glibc left the freed
/// ones as holes between the live ones that jemalloc's size classes do not (2.22 against 1.75
/// KiB resident a partition; bench/RESULTS.md, "An idle partition under 2 KiB").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse_with_defaults();
    if cli.print_default_config {
        print!("{}", Config::default_toml());
        return;
    }
    let issue = cli.issue_client_cert.clone();
    let make_ca = cli.make_dev_ca.clone();
    let config = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamd: {e}");
            std::process::exit(2);
        }
    };
    if let Some(names) = make_ca {
        match quiver_broker::identity::make_dev_ca(&config, &names) {
            Ok(done) => {
                println!("{done}");
                return;
            }
            Err(e) => {
                eprintln!("streamd: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(name) = issue {
        match quiver_broker::identity::issue_client_cert(&config, &name) {
            Ok((cert, key)) => {
                println!("{}\n{}", cert.display(), key.display());
                return;
            }
            Err(e) => {
                eprintln!("streamd: {e}");
                std::process::exit(1);
            }
        }
    }
    init_logging(&config);
    quiver_broker::process::exit_on_panic();
    if let Err(e) = quiver_broker::run::run(config) {
        tracing::error!(error = %e, "streamd failed");
        eprintln!("streamd: {e}");
        std::process::exit(1);
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(config.log_filter());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
