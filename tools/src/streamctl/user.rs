//! `streamctl user`: create (or give a new password to), delete and list SASL SCRAM users.
//! The new user's password is read as the login password is (`quiver_tools::credentials`),
//! and only its salted form leaves streamctl (`Admin::create_user`).

use std::io::IsTerminal;

use quiver_client::{Admin, Client, ScramMechanism};
use quiver_tools::credentials::{prompt_password, read_password, read_password_file};
use quiver_tools::outln;
use serde_json::json;

use crate::args::{Output, UserCommand, UserCreateArgs};
use crate::output::{print_json, print_table};
use crate::CliResult;

pub async fn user(client: &Client, cmd: &UserCommand) -> CliResult {
    let admin = Admin::new(client.clone());
    let e = |e: quiver_client::Error| e.to_string();
    match cmd {
        UserCommand::Create(a) => {
            let password = new_password(a)?;
            admin
                .create_user(&a.name, &password, a.mechanism, a.iterations)
                .await
                .map_err(e)?;
            match a.out.output {
                Output::Json => print_json(&json!({
                    "user": a.name,
                    "mechanism": a.mechanism.name(),
                    "iterations": a.iterations,
                })),
                Output::Text => {
                    outln!(
                        "user {}: {} credential set ({} iterations)",
                        a.name,
                        a.mechanism.name(),
                        a.iterations
                    );
                    Ok(())
                }
            }
        }
        UserCommand::Delete {
            name,
            mechanism,
            out,
        } => {
            let mechanisms: Vec<ScramMechanism> = match mechanism {
                Some(m) => vec![*m],
                None => admin
                    .describe_users(Some(vec![name.clone()]))
                    .await
                    .map_err(e)?
                    .into_iter()
                    .filter(|u| u.user == *name)
                    .flat_map(|u| u.credentials)
                    .map(|c| c.mechanism)
                    .collect(),
            };
            if mechanisms.is_empty() {
                return Err(format!("user {name} has no credentials to delete"));
            }
            for m in &mechanisms {
                admin.delete_user(name, *m).await.map_err(e)?;
            }
            let names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
            match out.output {
                Output::Json => print_json(&json!({ "deleted": name, "mechanisms": names })),
                Output::Text => {
                    outln!("deleted user {name} ({})", names.join(", "));
                    Ok(())
                }
            }
        }
        UserCommand::List { names, out } => {
            let asked = (!names.is_empty()).then(|| names.clone());
            let users = admin.describe_users(asked).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&users),
                Output::Text => {
                    let rows: Vec<Vec<String>> = users
                        .iter()
                        .flat_map(|u| {
                            u.credentials.iter().map(|c| {
                                vec![
                                    u.user.clone(),
                                    c.mechanism.name().to_string(),
                                    c.iterations.to_string(),
                                ]
                            })
                        })
                        .collect();
                    print_table(&["USER", "MECHANISM", "ITERATIONS"], &rows);
                    Ok(())
                }
            }
        }
    }
}

/// The new user's password: from --new-password-file, --new-password-stdin, or typed twice
/// at a prompt.
fn new_password(a: &UserCreateArgs) -> CliResult<String> {
    if let Some(path) = &a.new_password_file {
        return read_password_file(path);
    }
    if a.new_password_stdin {
        return read_password(std::io::stdin().lock())
            .map_err(|e| format!("--new-password-stdin: {e}"));
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "no password for the new user {}: give --new-password-file <PATH> or \
             --new-password-stdin (a password is asked for only when stdin is a terminal)",
            a.name
        ));
    }
    let first = prompt_password(&format!("New password for {}: ", a.name))?;
    let again = prompt_password(&format!("Again, new password for {}: ", a.name))?;
    if first != again {
        return Err("the two passwords typed differ; nothing was changed".into());
    }
    Ok(first)
}
