//! `streamctl quota`: set, remove and list client quotas (`Admin::alter_quotas`).

use quiver_client::{
    Admin, Client, QuotaEntity, QuotaName, CONSUMER_BYTE_RATE, PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
};
use quiver_tools::outln;

use crate::args::{Output, QuotaCommand, QuotaEntityArgs};
use crate::output::{print_json, print_table};
use crate::CliResult;

fn entity(a: &QuotaEntityArgs) -> CliResult<QuotaEntity> {
    let part = |name: &Option<String>, default: bool| match (name, default) {
        (Some(n), _) => Some(QuotaName::Name(n.clone())),
        (None, true) => Some(QuotaName::Default),
        (None, false) => None,
    };
    let e = QuotaEntity {
        user: part(&a.user_name, a.user_default),
        client_id: part(&a.client_id, a.client_default),
    };
    if e.user.is_none() && e.client_id.is_none() {
        return Err(
            "name the entity: --user-name, --user-default, --client-id or --client-default".into(),
        );
    }
    Ok(e)
}

fn show(n: &Option<QuotaName>) -> String {
    match n {
        None => "-".into(),
        Some(QuotaName::Default) => "<default>".into(),
        Some(QuotaName::Name(s)) => s.clone(),
    }
}

pub async fn quota(client: &Client, cmd: &QuotaCommand) -> CliResult {
    let admin = Admin::new(client.clone());
    let e = |e: quiver_client::Error| e.to_string();
    match cmd {
        QuotaCommand::Set {
            entity: a,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
        } => {
            let target = entity(a)?;
            let mut changes = Vec::new();
            if let Some(r) = producer_byte_rate {
                changes.push((PRODUCER_BYTE_RATE, Some(*r)));
            }
            if let Some(r) = consumer_byte_rate {
                changes.push((CONSUMER_BYTE_RATE, Some(*r)));
            }
            if let Some(r) = request_percentage {
                changes.push((REQUEST_PERCENTAGE, Some(*r)));
            }
            if changes.is_empty() {
                return Err(
                    "give --producer-byte-rate, --consumer-byte-rate and/or --request-percentage"
                        .into(),
                );
            }
            admin.alter_quotas(&target, &changes).await.map_err(e)?;
            outln!(
                "quotas set for user {} client {}",
                show(&target.user),
                show(&target.client_id)
            );
            Ok(())
        }
        QuotaCommand::Remove {
            entity: a,
            producer_byte_rate,
            consumer_byte_rate,
            request_percentage,
        } => {
            let target = entity(a)?;
            let all = !producer_byte_rate && !consumer_byte_rate && !request_percentage;
            let mut changes = Vec::new();
            if *producer_byte_rate || all {
                changes.push((PRODUCER_BYTE_RATE, None));
            }
            if *consumer_byte_rate || all {
                changes.push((CONSUMER_BYTE_RATE, None));
            }
            if *request_percentage || all {
                changes.push((REQUEST_PERCENTAGE, None));
            }
            admin.alter_quotas(&target, &changes).await.map_err(e)?;
            outln!(
                "quotas removed for user {} client {}",
                show(&target.user),
                show(&target.client_id)
            );
            Ok(())
        }
        QuotaCommand::List { out } => {
            let quotas = admin.describe_quotas().await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&quotas),
                Output::Text => {
                    let rows: Vec<Vec<String>> = quotas
                        .iter()
                        .flat_map(|q| {
                            q.values.iter().map(|(k, v)| {
                                vec![
                                    show(&q.entity.user),
                                    show(&q.entity.client_id),
                                    k.clone(),
                                    v.to_string(),
                                ]
                            })
                        })
                        .collect();
                    print_table(&["USER", "CLIENT_ID", "QUOTA", "VALUE"], &rows);
                    Ok(())
                }
            }
        }
    }
}
