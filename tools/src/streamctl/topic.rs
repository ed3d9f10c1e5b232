//! `streamctl topic` and `streamctl cluster`: create, list, describe, alter, grow and delete
//! topics; describe the cluster.

use quiver_client::{Admin, AlterConfig, Client, ConfigResource, NewTopic, Offset};
use quiver_tools::outln;
use serde_json::json;

use crate::args::{Output, OutputArgs, TopicCommand};
use crate::output::{print_json, print_table};
use crate::CliResult;

pub async fn topic(client: &Client, cmd: &TopicCommand) -> CliResult {
    let admin = Admin::new(client.clone());
    let e = |e: quiver_client::Error| e.to_string();
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            out,
        } => {
            let mut t = NewTopic {
                name: name.clone(),
                partitions: *partitions,
                replication_factor: *replication_factor,
                ..NewTopic::default()
            };
            for (k, v) in configs {
                t = t.config(k.clone(), v.clone());
            }
            admin.create_topic(t).await.map_err(e)?;
            let d = admin.describe_topic(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({"created": name, "topic": d})),
                Output::Text => {
                    outln!(
                        "created topic {name} with {} partition{}",
                        d.partitions.len(),
                        if d.partitions.len() == 1 { "" } else { "s" }
                    );
                    Ok(())
                }
            }
        }
        TopicCommand::List { out } => {
            let topics = admin.list_topics().await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&topics),
                Output::Text => {
                    let rows: Vec<Vec<String>> = topics
                        .iter()
                        .map(|t| {
                            let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
                            vec![
                                t.name.clone(),
                                t.partitions.len().to_string(),
                                rf.to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "PARTITIONS", "REPLICAS"], &rows);
                    Ok(())
                }
            }
        }
        TopicCommand::Describe { name, out } => {
            let d = admin.describe_topic(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&d),
                Output::Text => {
                    outln!("NAME        {}", d.name);
                    outln!("ID          {}", d.id);
                    outln!("PARTITIONS  {}", d.partitions.len());
                    outln!();
                    let opt = |o: Option<Offset>| o.map_or("-".to_string(), |o| o.0.to_string());
                    let rows: Vec<Vec<String>> = d
                        .partitions
                        .iter()
                        .map(|p| {
                            vec![
                                p.partition.0.to_string(),
                                p.leader.map_or("-".into(), |l| l.0.to_string()),
                                p.leader_shard.map_or("-".into(), |s| s.to_string()),
                                ids(&p.replicas),
                                ids(&p.isr),
                                opt(p.start_offset),
                                opt(p.end_offset),
                                if p.offline.is_empty() {
                                    "-".into()
                                } else {
                                    ids(&p.offline)
                                },
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "PARTITION",
                            "LEADER",
                            "SHARD",
                            "REPLICAS",
                            "ISR",
                            "START",
                            "END",
                            "OFFLINE",
                        ],
                        &rows,
                    );
                    outln!();
                    let moving: Vec<Vec<String>> = d
                        .partitions
                        .iter()
                        .filter(|p| !p.adding.is_empty() || !p.removing.is_empty())
                        .map(|p| vec![p.partition.0.to_string(), ids(&p.adding), ids(&p.removing)])
                        .collect();
                    if !moving.is_empty() {
                        print_table(&["MOVING", "ADDING", "REMOVING"], &moving);
                        outln!();
                    }
                    let followers: Vec<Vec<String>> = d
                        .partitions
                        .iter()
                        .flat_map(|p| {
                            p.followers.iter().map(move |f| {
                                vec![
                                    p.partition.0.to_string(),
                                    f.broker.0.to_string(),
                                    f.fetch_offset.0.to_string(),
                                    f.lag_records.to_string(),
                                    f.lag_bytes.to_string(),
                                    f.lag_ms.to_string(),
                                    format!("{:.1}", f.fetches_per_second()),
                                ]
                            })
                        })
                        .collect();
                    if !followers.is_empty() {
                        print_table(
                            &[
                                "PARTITION",
                                "FOLLOWER",
                                "FETCH OFFSET",
                                "LAG RECORDS",
                                "LAG BYTES",
                                "LAG MS",
                                "FETCHES/S",
                            ],
                            &followers,
                        );
                        outln!();
                    }
                    let rows: Vec<Vec<String>> = d
                        .configs
                        .iter()
                        .map(|c| {
                            vec![
                                c.name.clone(),
                                c.value.clone().unwrap_or_else(|| "-".into()),
                                c.source.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["CONFIG", "VALUE", "SOURCE"], &rows);
                    for c in &d.configs {
                        if let Some(note) = &c.note {
                            outln!("note: {}: {note}", c.name);
                        }
                    }
                    Ok(())
                }
            }
        }
        TopicCommand::Delete { name, out } => {
            admin.delete_topic(name).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({ "deleted": name })),
                Output::Text => {
                    outln!("deleted topic {name}");
                    Ok(())
                }
            }
        }
        TopicCommand::Alter {
            name,
            set,
            delete,
            out,
        } => {
            if set.is_empty() && delete.is_empty() {
                return Err("nothing to change: give --set KEY=VALUE or --delete KEY".into());
            }
            let mut changes: Vec<AlterConfig> = set
                .iter()
                .map(|(k, v)| AlterConfig::set(k.clone(), v.clone()))
                .collect();
            changes.extend(delete.iter().map(|k| AlterConfig::delete(k.clone())));
            admin
                .alter_configs(ConfigResource::Topic(name.clone()), changes)
                .await
                .map_err(e)?;
            let configs = admin
                .describe_configs(ConfigResource::Topic(name.clone()))
                .await
                .map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({ "altered": name, "configs": configs })),
                Output::Text => {
                    outln!("altered topic {name}");
                    Ok(())
                }
            }
        }
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
            out,
        } => {
            admin
                .reassign_partition(name, *partition, replicas)
                .await
                .map_err(e)?;
            let d = admin.describe_topic(name).await.map_err(e)?;
            let p = d
                .partitions
                .iter()
                .find(|p| p.partition.0 == *partition)
                .ok_or_else(|| format!("topic {name} has no partition {partition}"))?;
            match out.output {
                Output::Json => print_json(&json!({
                    "topic": name,
                    "partition": partition,
                    "target": replicas,
                    "now": p,
                })),
                Output::Text => {
                    let list =
                        |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
                    if p.adding.is_empty() && p.removing.is_empty() {
                        outln!(
                            "partition {partition} of {name} now on brokers {}",
                            list(replicas)
                        );
                    } else {
                        outln!(
                            "moving partition {partition} of {name} to brokers {}: adding {}, removing {} once the new replicas are in sync",
                            list(replicas),
                            ids(&p.adding),
                            ids(&p.removing)
                        );
                    }
                    Ok(())
                }
            }
        }
        TopicCommand::AddPartitions {
            name,
            partitions: total,
            out,
        } => {
            admin.create_partitions(name, *total).await.map_err(e)?;
            match out.output {
                Output::Json => print_json(&json!({ "topic": name, "partitions": total })),
                Output::Text => {
                    outln!("topic {name} now has {total} partitions");
                    Ok(())
                }
            }
        }
    }
}

/// Broker ids as `1,2,3` (`-` for none).
fn ids(v: &[quiver_client::BrokerId]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter()
        .map(|b| b.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

pub async fn cluster(client: &Client, out: OutputArgs) -> CliResult {
    let admin = Admin::new(client.clone());
    let c = admin.describe_quorum().await.map_err(|e| e.to_string())?;
    match out.output {
        Output::Json => print_json(&c),
        Output::Text => {
            let dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            outln!(
                "CLUSTER     {}",
                c.cluster_id.as_deref().unwrap_or("(no id)")
            );
            outln!("CONTROLLER  {}", dash(c.controller.map(u64::from)));
            if !c.voters.is_empty() {
                outln!("TERM        {}", c.term);
                outln!("COMMITTED   {}", c.committed);
            }
            outln!();
            let rows: Vec<Vec<String>> = c
                .brokers
                .iter()
                .map(|b| {
                    let address = quiver_client::BrokerDescription {
                        id: b.id,
                        host: b.host.clone(),
                        port: b.port,
                    }
                    .address();
                    vec![
                        b.id.to_string(),
                        address,
                        b.rack.clone().unwrap_or_else(|| "-".into()),
                        if b.controller_only {
                            "controller"
                        } else {
                            "broker"
                        }
                        .into(),
                        b.shards.to_string(),
                        if b.fenced { "fenced" } else { "live" }.into(),
                        if Some(b.id) == c.controller {
                            "yes"
                        } else {
                            ""
                        }
                        .into(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "BROKER",
                    "ADDRESS",
                    "RACK",
                    "ROLE",
                    "SHARDS",
                    "STATUS",
                    "CONTROLLER",
                ],
                &rows,
            );
            outln!();
            if c.voters.is_empty() {
                outln!("no controller quorum: this broker runs alone");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = c
                .voters
                .iter()
                .map(|v| {
                    vec![
                        v.id.to_string(),
                        if Some(v.id) == c.controller {
                            "leader"
                        } else {
                            "follower"
                        }
                        .into(),
                        dash(v.log_end),
                        dash(v.lag),
                        dash(v.last_heard_ms),
                    ]
                })
                .collect();
            print_table(&["VOTER", "ROLE", "LOG END", "LAG", "LAST HEARD MS"], &rows);
            Ok(())
        }
    }
}
