//! What Quiver's command-line tools share: `streamctl` (this crate's binary) and `streambench`
//! (bench/) print through [`outln!`], so that `| head` ends their output instead of crashing
//! them.

/// `println!` that treats a closed stdout (`| head`) as the end of the output, not a crash: the
/// process exits 0 when the reader has gone, and 1 with a one-line message on any other write
/// error.
#[macro_export]
macro_rules! outln {
    () => { $crate::emit(format_args!("")) };
    ($($arg:tt)*) => { $crate::emit(format_args!($($arg)*)) };
}

/// Writes one line to stdout for [`outln!`].
pub fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("{}: writing output: {e}", program());
        std::process::exit(1);
    }
}

/// This process's name, as it was started (`streamctl`, `streambench`).
pub fn program() -> String {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "quiver".into())
}
