//! `auction-consumer status`: what `kafka-consumer-groups --describe` shows, for the bids
//! topic: each consumer group that reads it, its members and their partitions, and per
//! partition the committed offset, the end offset and the lag, all read from Kafka.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use auction_common::config::KafkaConfig;
use auction_common::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub kafka: KafkaConfig,
    /// Print one JSON object instead of a table.
    #[arg(long = "json", env = "STATUS_JSON")]
    pub json: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionLag {
    pub partition: i32,
    /// The group's committed offset; None when it has committed none.
    pub committed: Option<i64>,
    pub end: i64,
    /// End minus committed (minus the start of the log when nothing is committed).
    pub lag: i64,
    /// The member that holds the partition now, if one does.
    pub member: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupStatus {
    pub group: String,
    pub state: String,
    /// Member id and host, with the partitions of the topic assigned to it.
    pub members: Vec<(String, String, Vec<i32>)>,
    pub partitions: Vec<PartitionLag>,
    pub total_lag: i64,
}

const LIMIT: Duration = Duration::from_secs(10);

/// The partitions of `topic` in a member's assignment (Kafka's ConsumerProtocolAssignment:
/// version i16, then [topic string, [partition i32]], then user data).
fn assigned_partitions(assignment: &[u8], topic: &str) -> Vec<i32> {
    fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = b.split_at_checked(N)?;
        *b = rest;
        head.try_into().ok()
    }
    let mut b = assignment;
    let mut found = Vec::new();
    let parse = |b: &mut &[u8], found: &mut Vec<i32>| -> Option<()> {
        take::<2>(b)?;
        let topics = i32::from_be_bytes(take::<4>(b)?);
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take::<2>(b)?).max(0) as usize;
            let (name, rest) = b.split_at_checked(len)?;
            *b = rest;
            let count = i32::from_be_bytes(take::<4>(b)?);
            for _ in 0..count.max(0) {
                let p = i32::from_be_bytes(take::<4>(b)?);
                if name == topic.as_bytes() {
                    found.push(p);
                }
            }
        }
        Some(())
    };
    let _ = parse(&mut b, &mut found);
    found.sort_unstable();
    found
}

/// Every consumer group with a member on the topic or an offset committed for it.
pub fn groups(config: &KafkaConfig) -> anyhow::Result<Vec<GroupStatus>> {
    let reader: BaseConsumer = kafka::client_config(config).create().context("Failed to create a Kafka client")?;
    let metadata = reader.fetch_metadata(Some(&config.topic), LIMIT).context("Failed to read the topic's metadata")?;
    let partitions: Vec<i32> =
        metadata.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        let (low, high) = reader.fetch_watermarks(&config.topic, p, LIMIT).with_context(|| format!("Failed to read the end of partition {p}"))?;
        ends.insert(p, (low, high));
    }
    let list = reader.client().fetch_group_list(None, LIMIT).context("Failed to list the consumer groups")?;
    let mut out = Vec::new();
    for group in list.groups() {
        let members: Vec<(String, String, Vec<i32>)> = group
            .members()
            .iter()
            .map(|m| (m.id().to_owned(), m.client_host().to_owned(), m.assignment().map(|a| assigned_partitions(a, &config.topic)).unwrap_or_default()))
            .collect();
        let asker: BaseConsumer = kafka::client_config(config).set("group.id", group.name()).create()?;
        let mut tpl = TopicPartitionList::new();
        for &p in &partitions {
            tpl.add_partition(&config.topic, p);
        }
        let committed = asker.committed_offsets(tpl, LIMIT).with_context(|| format!("Failed to read the offsets of group {}", group.name()))?;
        let committed: BTreeMap<i32, Option<i64>> = committed
            .elements()
            .iter()
            .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { Some(o) } else { None }))
            .collect();
        let reads_topic = members.iter().any(|m| !m.2.is_empty()) || committed.values().any(Option::is_some);
        if !reads_topic {
            continue;
        }
        let lags: Vec<PartitionLag> = partitions
            .iter()
            .map(|&p| {
                let (low, end) = ends.get(&p).copied().unwrap_or((0, 0));
                let c = committed.get(&p).copied().flatten();
                PartitionLag {
                    partition: p,
                    committed: c,
                    end,
                    lag: end - c.unwrap_or(low),
                    member: members.iter().find(|m| m.2.contains(&p)).map(|m| m.0.clone()),
                }
            })
            .collect();
        out.push(GroupStatus {
            group: group.name().to_owned(),
            state: group.state().to_owned(),
            total_lag: lags.iter().map(|l| l.lag).sum(),
            members,
            partitions: lags,
        });
    }
    out.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(out)
}

pub async fn run_command(args: StatusArgs) -> anyhow::Result<()> {
    let config = args.kafka.clone();
    let groups = tokio::task::spawn_blocking(move || groups(&config)).await??;
    if args.json {
        println!("{}", serde_json_string(&groups));
        return Ok(());
    }
    println!("topic {}: {} consumer group(s)", args.kafka.topic, groups.len());
    for g in &groups {
        println!("\ngroup {} ({}), {} member(s), lag {}", g.group, g.state, g.members.len(), g.total_lag);
        for (id, host, parts) in &g.members {
            println!("  member {id} {host} partitions {parts:?}");
        }
        println!("  {:>9} {:>12} {:>12} {:>8}  member", "partition", "committed", "end", "lag");
        for l in &g.partitions {
            let committed = l.committed.map_or("-".to_owned(), |c| c.to_string());
            println!("  {:>9} {:>12} {:>12} {:>8}  {}", l.partition, committed, l.end, l.lag, l.member.as_deref().unwrap_or("-"));
        }
    }
    Ok(())
}

fn serde_json_string(groups: &[GroupStatus]) -> String {
    serde_json::to_string(&serde_json::json!({ "groups": groups })).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_assignment_yields_its_partitions_of_the_topic() {
        let mut bytes = vec![0, 1, 0, 0, 0, 2];
        for (topic, parts) in [("other", vec![9]), ("bids", vec![4, 1])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((parts.len() as i32).to_be_bytes());
            for p in parts {
                bytes.extend((p as i32).to_be_bytes());
            }
        }
        bytes.extend([0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(assigned_partitions(&bytes, "bids"), vec![1, 4]);
        assert_eq!(assigned_partitions(&bytes[..7], "bids"), Vec::<i32>::new(), "a truncated assignment yields nothing");
    }
}
