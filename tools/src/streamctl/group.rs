//! `streamctl group`: list, describe and delete consumer groups, and reset their offsets.

use quiver_client::{Admin, Client, Offset, OffsetSpec, TopicPartition};
use quiver_tools::outln;
use serde_json::json;

use crate::args::{GroupCommand, Output, ResetArgs};
use crate::output::{print_json, print_table};
use crate::CliResult;

pub async fn group(client: &Client, cmd: &GroupCommand) -> CliResult {
    let admin = Admin::new(client.clone());
    let e = |e: quiver_client::Error| e.to_string();
    match cmd {
        GroupCommand::List { out } => {
            let groups = admin.list_groups().await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&groups),
                Output::Text => {
                    let rows: Vec<Vec<String>> = groups
                        .iter()
                        .map(|g| vec![g.group_id.clone(), g.state.to_string()])
                        .collect();
                    print_table(&["GROUP", "STATE"], &rows);
                    Ok(())
                }
            }
        }
        GroupCommand::Describe { name, out } => {
            let g = admin.describe_group(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&g),
                Output::Text => {
                    outln!("GROUP     {}", g.group_id);
                    outln!("STATE     {}", g.state);
                    outln!("ASSIGNOR  {}", g.assignor.as_deref().unwrap_or("-"));
                    outln!("EPOCH     {}", g.group_epoch);
                    outln!("MEMBERS   {}", g.members.len());
                    if !g.members.is_empty() {
                        outln!();
                        let rows: Vec<Vec<String>> = g
                            .members
                            .iter()
                            .map(|m| {
                                vec![
                                    m.member_id.clone(),
                                    m.instance_id.clone().unwrap_or_else(|| "-".into()),
                                    m.client_host.clone().unwrap_or_default(),
                                    m.member_epoch.to_string(),
                                    partition_list(&m.assigned),
                                ]
                            })
                            .collect();
                        print_table(
                            &["MEMBER", "INSTANCE", "HOST", "EPOCH", "PARTITIONS"],
                            &rows,
                        );
                    }
                    outln!();
                    let opt = |o: Option<u64>| o.map_or("-".to_string(), |o| o.to_string());
                    let rows: Vec<Vec<String>> = g
                        .offsets
                        .iter()
                        .map(|o| {
                            vec![
                                o.topic.clone(),
                                o.partition.to_string(),
                                opt(o.committed),
                                opt(o.end),
                                opt(o.lag),
                                o.member_id.clone().unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    print_table(
                        &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"],
                        &rows,
                    );
                    Ok(())
                }
            }
        }
        GroupCommand::ResetOffsets(r) => reset_offsets(&admin, r).await,
        GroupCommand::Delete { name, out } => {
            admin.delete_group(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({ "deleted": name })),
                Output::Text => {
                    outln!("deleted group {name}");
                    Ok(())
                }
            }
        }
    }
}

/// `orders:0,1 payments:3`
fn partition_list(assigned: &[(String, Vec<u32>)]) -> String {
    assigned
        .iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
            format!("{t}:{}", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One partition of a reset plan.
#[derive(serde::Serialize)]
struct Reset {
    topic: String,
    partition: u32,
    /// The committed offset now; `None`: nothing committed.
    current: Option<u64>,
    new: u64,
}

/// `group reset-offsets`: works out each partition's new offset, shows the plan, and with
/// `--execute` commits it from outside the group (which the broker allows only while the
/// group has no members).
async fn reset_offsets(admin: &Admin, r: &ResetArgs) -> CliResult {
    let e = |e: quiver_client::Error| e.to_string();
    let group = &r.name;
    let topic = admin.describe_topic(&r.topic).await.map_err(e)?;
    let count = topic.partitions.len() as u32;
    let mut partitions: Vec<u32> = if r.partitions.is_empty() {
        (0..count).collect()
    } else {
        r.partitions.clone()
    };
    partitions.sort_unstable();
    partitions.dedup();
    if let Some(p) = partitions.iter().find(|p| **p >= count) {
        return Err(format!(
            "topic '{}' has {count} partitions; partition {p} does not exist",
            r.topic
        ));
    }
    if r.execute {
        match admin.describe_group(group).await {
            Ok(g) if !g.members.is_empty() => {
                return Err(format!(
                    "group '{group}' has {} active member{}; stop its consumers before resetting \
                     its offsets (nothing was changed)",
                    g.members.len(),
                    if g.members.len() == 1 { "" } else { "s" }
                ))
            }
            Ok(_) => {}
            // A group that never committed: offsets may be set for it before it starts.
            Err(err) if err.code() == Some(quiver_client::ErrorCode::GroupIdNotFound) => {}
            Err(err) => return Err(err.to_string()),
        }
    }
    let committed: std::collections::HashMap<TopicPartition, u64> = admin
        .list_group_offsets(group)
        .await
        .map_err(e)?
        .into_iter()
        .map(|(tp, o)| (tp, o.offset.0))
        .collect();
    let by_time = match r.to_datetime {
        Some(t) => {
            let asked: Vec<(TopicPartition, OffsetSpec)> = partitions
                .iter()
                .map(|p| (TopicPartition::new(&r.topic, *p), OffsetSpec::Timestamp(t)))
                .collect();
            admin.list_offsets(&asked).await.map_err(e)?
        }
        None => Vec::new(),
    };
    let mut plan = Vec::with_capacity(partitions.len());
    for p in partitions {
        let tp = TopicPartition::new(&r.topic, p);
        let d = &topic.partitions[p as usize];
        let (start, end) = match (d.start_offset, d.end_offset) {
            (Some(s), Some(e)) => (s.0, e.0),
            _ => return Err(format!("{tp} has no known offsets (no leader?); try again")),
        };
        let current = committed.get(&tp).copied();
        let wanted: i128 = if r.to_earliest {
            i128::from(start)
        } else if r.to_latest {
            i128::from(end)
        } else if let Some(o) = r.to_offset {
            i128::from(o)
        } else if r.to_datetime.is_some() {
            let found = by_time.iter().find(|(t, _)| *t == tp).and_then(|(_, o)| *o);
            i128::from(found.map_or(end, |o| o.0))
        } else if let Some(n) = r.shift_by {
            let c = current.ok_or_else(|| {
                format!(
                    "{tp} has no committed offset in group '{group}' to shift from; use \
                     --to-earliest, --to-latest, --to-offset or --to-datetime"
                )
            })?;
            i128::from(c) + i128::from(n)
        } else {
            unreachable!("clap requires one of the --to options")
        };
        let new = wanted.clamp(i128::from(start), i128::from(end)) as u64;
        plan.push(Reset {
            topic: r.topic.clone(),
            partition: p,
            current,
            new,
        });
    }
    if r.execute {
        let offsets: Vec<(TopicPartition, Offset)> = plan
            .iter()
            .map(|x| (TopicPartition::new(&x.topic, x.partition), Offset(x.new)))
            .collect();
        admin
            .alter_group_offsets(group, &offsets)
            .await
            .map_err(e)?;
    }
    match r.out.output {
        Output::Json => print_json(&json!({
            "group": group,
            "executed": r.execute,
            "partitions": plan,
        }))?,
        Output::Text => {
            let rows: Vec<Vec<String>> = plan
                .iter()
                .map(|x| {
                    vec![
                        x.topic.clone(),
                        x.partition.to_string(),
                        x.current.map_or("-".into(), |c| c.to_string()),
                        x.new.to_string(),
                    ]
                })
                .collect();
            print_table(&["TOPIC", "PARTITION", "CURRENT", "NEW"], &rows);
        }
    }
    if r.execute {
        eprintln!(
            "streamctl: reset {} partition{} of group {group}",
            plan.len(),
            if plan.len() == 1 { "" } else { "s" }
        );
    } else {
        eprintln!("streamctl: dry run, nothing changed; add --execute to commit these offsets");
    }
    Ok(())
}
