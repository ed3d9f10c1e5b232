use quiver_broker::config::{Cli, Config};

fn main() {
    let cli = Cli::parse_with_defaults();
    if cli.print_default_config {
        print!("{}", Config::default_toml());
        return;
    }
    let config = match Config::load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamd: {e}");
            std::process::exit(2);
        }
    };
    println!("{config:?}");
}
