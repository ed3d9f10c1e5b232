//! Passwords on a command line, without ever a `--password VALUE` flag (which `ps` and the
//! shell's history would show): from a file's first line, from an environment variable, or
//! typed at a prompt that does not echo. Both tools log in this way (`--user`,
//! `--password-file`, `--sasl-mechanism`), and `streamctl user create` reads a new user's
//! password with the same functions.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use quiver_client::{SaslCredentials, ScramMechanism};

/// Where a tool's login password may come from besides a file: an environment variable, by
/// name (`STREAMCTL_PASSWORD`), and its value if set.
pub struct PasswordEnv<'a> {
    pub name: &'a str,
    pub value: Option<String>,
}

impl PasswordEnv<'_> {
    /// The variable `name` of the process environment.
    pub fn read(name: &str) -> PasswordEnv<'_> {
        PasswordEnv {
            name,
            value: std::env::var(name).ok(),
        }
    }
}

/// The credentials a tool logs in with: `None` without a user. The password is the first
/// line of `password_file`, else the environment variable, else typed at a prompt when
/// stdin is a terminal; with none of these, an error that names them.
pub fn login(
    user: Option<&str>,
    password_file: Option<&Path>,
    env: PasswordEnv<'_>,
    mechanism: ScramMechanism,
) -> Result<Option<SaslCredentials>, String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        if password_file.is_some() {
            return Err("--password-file is given without --user: name the user it is for".into());
        }
        return Ok(None);
    };
    let password = match (password_file, env.value.filter(|v| !v.is_empty())) {
        (Some(path), _) => read_password_file(path)?,
        (None, Some(value)) => value,
        (None, None) if std::io::stdin().is_terminal() => {
            prompt_password(&format!("Password for {user}: "))?
        }
        (None, None) => {
            return Err(format!(
                "no password for --user {user}: give --password-file <PATH> (its first line), \
                 or set {}; a password is asked for only when stdin is a terminal",
                env.name
            ))
        }
    };
    Ok(Some(
        SaslCredentials::new(user, password).mechanism(mechanism),
    ))
}

/// The password in the first line of the file at `path`.
pub fn read_password_file(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
    read_password(std::io::BufReader::new(file))
        .map_err(|e| format!("the password file {}: {e}", path.display()))
}

/// The first line of `input`, without its line ending (`\n` or `\r\n`): a password. Nothing
/// else of the line is trimmed: spaces may be part of a password.
pub fn read_password(mut input: impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| format!("cannot read a password: {e}"))?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(line.to_string())
}

/// Asks for a password on stderr and reads it from the terminal on stdin, not echoed.
pub fn prompt_password(prompt: &str) -> Result<String, String> {
    eprint!("{prompt}");
    let echo = EchoOff::new();
    let read = read_password(std::io::stdin().lock());
    drop(echo);
    // The newline the user typed was not echoed either.
    eprintln!();
    read
}

/// Turns the terminal's echo off on stdin while it lives, and back on when dropped. Where
/// stdin is no terminal it does nothing.
struct EchoOff {
    saved: Option<libc::termios>,
}

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: `termios` is a plain C struct for which all-zero bytes are a valid value;
        // tcgetattr overwrites it before it is read.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 stays open for the process's life and `saved` is a valid, writable
        // termios; tcgetattr writes only into it.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return EchoOff { saved: None };
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: as above; tcsetattr only reads the termios it is given.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
            return EchoOff { saved: None };
        }
        EchoOff { saved: Some(saved) }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: fd 0 is open and `saved` is the terminal's own earlier state.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_the_first_line_without_its_ending() {
        // (input, the password or the error's words)
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("s3cret\n", Ok("s3cret")),
            ("s3cret", Ok("s3cret")),
            ("s3cret\r\nsecond line\n", Ok("s3cret")),
            ("  spaced out \n", Ok("  spaced out ")),
            ("\nlater\n", Err("empty")),
            ("", Err("empty")),
        ];
        for (input, want) in cases {
            let got = read_password(input.as_bytes());
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{input:?}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{input:?}: {g}"),
                _ => panic!("{input:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_password_file_is_read_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "hunter2\n").unwrap();
        assert_eq!(read_password_file(&path).unwrap(), "hunter2");
        let missing = dir.path().join("missing");
        let err = read_password_file(&missing).unwrap_err();
        assert!(err.contains("missing"), "{err}");
        std::fs::write(&path, "\n").unwrap();
        let err = read_password_file(&path).unwrap_err();
        assert!(err.contains("empty") && err.contains("pw"), "{err}");
    }

    #[test]
    fn login_takes_the_file_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "from-file\n").unwrap();
        let env = |value: Option<&str>| PasswordEnv {
            name: "TOOL_PASSWORD",
            value: value.map(str::to_string),
        };
        let m = ScramMechanism::Sha256;
        let c = login(Some("alice"), Some(&path), env(Some("from-env")), m)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str(), c.mechanism),
            ("alice", "from-file", m)
        );
        let c = login(Some("alice"), None, env(Some("from-env")), m)
            .unwrap()
            .unwrap();
        assert_eq!(c.password, "from-env");
        assert!(login(None, None, env(Some("x")), m).unwrap().is_none());
        let err = login(None, Some(&path), env(None), m).unwrap_err();
        assert!(err.contains("without --user"), "{err}");
        if !std::io::stdin().is_terminal() {
            let err = login(Some("alice"), None, env(None), m).unwrap_err();
            assert!(
                err.contains("--password-file") && err.contains("TOOL_PASSWORD"),
                "{err}"
            );
        }
    }
}
