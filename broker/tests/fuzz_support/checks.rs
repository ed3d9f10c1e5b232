//! What the broker's fuzz targets check, and their seeds: used by the cheap tests
//! (`broker/tests/fuzz_records.rs`) and by the cargo-fuzz targets `offsets_records` and
//! `metadata_json` (`fuzz/fuzz_targets/`, which include this file).
#![allow(dead_code)]

use quiver_broker::cluster::meta::{
    FileMetadataStore, MetaError, MetadataCommand, MetadataState, MetadataStore, PartitionMeta,
    TopicMeta,
};
use quiver_broker::group::records::{
    decode_key, decode_value, encode_key, encode_value, OffsetKey, OffsetValue, METADATA_BYTES_MAX,
};
use std::collections::BTreeMap;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Offsets records (`__consumer_offsets`)

/// Where the leader epoch sits in an encoded value: after the version byte and the offset.
const VALUE_EPOCH_AT: usize = 1 + 8;

/// The input as a key and as a value of `__consumer_offsets` (`group/records.rs`):
/// - decoding never panics;
/// - what decodes re-encodes to bytes that decode to the same key or value (decode(encode(x))
///   == x), and those bytes are the input's leading bytes (decoding ignores what follows), except
///   that a value's leader epoch outside `-1` and `0..=u32::MAX` decodes as none and re-encodes
///   as `-1`.
pub fn offsets_records(data: &[u8]) {
    if let Ok(k) = decode_key(data) {
        let enc = encode_key(&k);
        assert_eq!(
            decode_key(&enc).as_ref(),
            Ok(&k),
            "decode(encode(key)) != key"
        );
        assert!(
            data.starts_with(&enc),
            "a key re-encodes to other bytes than it was read from"
        );
    }
    if let Ok(v) = decode_value(data) {
        let enc = encode_value(&v);
        assert_eq!(
            decode_value(&enc).as_ref(),
            Ok(&v),
            "decode(encode(value)) != value"
        );
        let epoch =
            i64::from_le_bytes(data[VALUE_EPOCH_AT..VALUE_EPOCH_AT + 8].try_into().unwrap());
        if epoch == -1 || u32::try_from(epoch).is_ok() {
            assert!(
                data.starts_with(&enc),
                "a value re-encodes to other bytes than it was read from"
            );
        } else {
            assert_eq!(v.leader_epoch, None, "epoch {epoch} is not a leader epoch");
            let mut canonical = data[..enc.len()].to_vec();
            canonical[VALUE_EPOCH_AT..VALUE_EPOCH_AT + 8].copy_from_slice(&(-1i64).to_le_bytes());
            assert_eq!(canonical, enc);
        }
    }
}

/// Seeds of `offsets_records`: keys and values with empty, Unicode and longest strings, and the
/// boundary offsets and epochs.
pub fn records_seeds() -> Vec<Vec<u8>> {
    let keys = [
        OffsetKey {
            group: "g".into(),
            topic: "orders.v2".into(),
            partition: 7,
        },
        OffsetKey {
            group: String::new(),
            topic: String::new(),
            partition: 0,
        },
        OffsetKey {
            group: "grüppe-😀".into(),
            topic: "t".repeat(249),
            partition: u32::MAX,
        },
    ];
    let values = [
        OffsetValue {
            offset: 42,
            leader_epoch: Some(3),
            commit_ms: 1_700_000_000_000,
            metadata: "m".into(),
        },
        OffsetValue {
            offset: 0,
            leader_epoch: None,
            commit_ms: -1,
            metadata: String::new(),
        },
        OffsetValue {
            offset: u64::MAX,
            leader_epoch: Some(u32::MAX),
            commit_ms: i64::MIN,
            metadata: "x".repeat(METADATA_BYTES_MAX),
        },
    ];
    keys.iter()
        .map(encode_key)
        .chain(values.iter().map(encode_value))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// metadata.json

/// The first line of a metadata file, for `body` (as `FileMetadataStore` writes it).
pub fn header_for(body: &[u8]) -> Vec<u8> {
    format!("quiver-metadata v1 crc32={:08x}\n", crc32fast::hash(body)).into_bytes()
}

/// The file of a `metadata_json` input: the first byte's bit 0 asks for the checksum to be made
/// right (the rest's first line is replaced by a correct header, so that the bytes reach the
/// JSON parser); the rest is the file.
pub fn metadata_file(data: &[u8]) -> Vec<u8> {
    let Some((&flags, rest)) = data.split_first() else {
        return Vec::new();
    };
    if flags & 1 == 0 {
        return rest.to_vec();
    }
    let body = match rest.iter().position(|&b| b == b'\n') {
        Some(n) => &rest[n + 1..],
        None => rest,
    };
    let mut file = header_for(body);
    file.extend_from_slice(body);
    file
}

/// `FileMetadataStore::open` on a data directory whose `meta/metadata.json` holds `file`
/// (`data_dir` is removed and made anew):
/// - no panic;
/// - a damaged file is an error (`MetaError::Corrupt`), never an empty or partial state: when
///   open succeeds, the file's first line is the header with the CRC-32 of the rest, and the
///   state is exactly the rest's JSON;
/// - a store that opened takes a command, and the file it writes opens again to the same state.
///
/// Returns whether the store opened.
pub fn metadata_json(data_dir: &Path, file: &[u8]) -> bool {
    let _ = std::fs::remove_dir_all(data_dir);
    std::fs::create_dir_all(data_dir.join("meta")).unwrap();
    std::fs::write(data_dir.join("meta/metadata.json"), file).unwrap();
    let mut store = match FileMetadataStore::open(data_dir) {
        Ok(s) => s,
        Err(MetaError::Corrupt { .. }) => return false,
        Err(e) => panic!("a damaged file is reported as corrupt, not as {e}"),
    };
    let newline = file
        .iter()
        .position(|&b| b == b'\n')
        .expect("an accepted file has a header line");
    let (header, body) = (&file[..newline], &file[newline + 1..]);
    let hex = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.strip_prefix("quiver-metadata v1 crc32="))
        .expect("an accepted file has the header");
    assert_eq!(
        u32::from_str_radix(hex, 16).ok(),
        Some(crc32fast::hash(body)),
        "an accepted file's checksum is right"
    );
    let parsed: MetadataState = serde_json::from_slice(body).expect("an accepted body is JSON");
    assert_eq!(
        store.state(),
        &parsed,
        "the state is the file's, no more, no less"
    );

    let up_to = parsed.producer_ids_reserved.saturating_add(1000);
    let next = store
        .submit(MetadataCommand::ReserveProducerIds { up_to })
        .expect("an opened store takes a command")
        .clone();
    drop(store);
    let again = FileMetadataStore::open(data_dir).expect("the store reopens what it wrote");
    assert_eq!(again.state(), &next, "the state survives a rewrite");
    true
}

fn topic(name: &str, partitions: u32, configs: &[(&str, &str)]) -> TopicMeta {
    TopicMeta {
        name: name.into(),
        id: format!("{:032x}", name.len() as u128 * 0x1234_5678_9abc_def1),
        partitions,
        replication_factor: 1,
        configs: configs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        created_ms: 1_700_000_000_000,
        placement: vec![],
    }
}

/// Seeds of `metadata_json` (each as an input: flag byte, then the file): files written by a
/// real store after a few commands (topics with and without configs, a deleted topic, reserved
/// producer ids), each as written and with the fix-up flag; and a file with an empty state.
/// `scratch` is a directory the stores are made in.
pub fn metadata_seeds(scratch: &Path) -> Vec<Vec<u8>> {
    let commands = [
        MetadataCommand::ReserveProducerIds { up_to: 1000 },
        MetadataCommand::CreateTopic(topic("orders", 3, &[("retention.ms", "1000")])),
        MetadataCommand::CreateTopic(topic("events", 1, &[])),
        MetadataCommand::CreatePartitions {
            name: "orders".into(),
            total: 6,
            placement: vec![],
        },
        // A cluster's: its id, a broker, a topic placed on brokers, grown with placements.
        MetadataCommand::InitCluster {
            carried: vec![],
            producer_ids_reserved: 0,
            cluster_id: "c0ffee".into(),
        },
        MetadataCommand::RegisterBroker(quiver_broker::cluster::meta::BrokerMeta {
            id: 2,
            host: "127.0.0.1".into(),
            port: 9093,
            rack: Some("r1".into()),
            shard_count: 2,
            incarnation: 7,
            epoch: 0,
            fenced: false,
            controller_only: false,
            shutting_down: false,
        }),
        MetadataCommand::CreateTopic(TopicMeta {
            placement: vec![
                PartitionMeta::new(vec![1, 2]),
                PartitionMeta::new(vec![2, 1]),
            ],
            replication_factor: 2,
            ..topic("placed", 2, &[])
        }),
        MetadataCommand::CreatePartitions {
            name: "placed".into(),
            total: 3,
            placement: vec![PartitionMeta::new(vec![2, 1])],
        },
        MetadataCommand::AlterConfigs {
            name: "events".into(),
            set: [("cleanup.policy".to_string(), "delete".to_string())].into(),
            remove: vec![],
        },
        MetadataCommand::DeleteTopic {
            name: "events".into(),
        },
    ];
    let mut files = Vec::new();
    let _ = std::fs::remove_dir_all(scratch);
    let mut store = FileMetadataStore::open(scratch).unwrap();
    for (i, c) in commands.into_iter().enumerate() {
        store.submit(c).unwrap();
        if i % 2 == 1 || i == 0 {
            files.push(std::fs::read(scratch.join("meta/metadata.json")).unwrap());
        }
    }
    let empty = serde_json::to_vec_pretty(&MetadataState::default()).unwrap();
    let mut file = header_for(&empty);
    file.extend_from_slice(&empty);
    files.push(file);
    let _ = std::fs::remove_dir_all(scratch);
    let mut out = Vec::new();
    for f in files {
        for flag in [0u8, 1] {
            let mut input = vec![flag];
            input.extend_from_slice(&f);
            out.push(input);
        }
    }
    out
}
