//! Topic names and topic configs, with Kafka's names and rules.
//!
//! A topic stores only the configs set on it (its overrides); everything else comes from the
//! broker's defaults at the time of use, as in Kafka, so changing a broker default changes every
//! topic that did not override it.

use std::collections::BTreeMap;

use crate::config::{Config, TimestampType, SEGMENT_BYTES_MIN};

/// Longest topic name (Kafka's limit: 249, so that `<name>-<partition>` fits in 255).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions a topic may have: as many as one broker holds by default (`max_partitions`),
/// and as many entries as one request may name (`REQUEST_ENTRIES_MAX`), so a client can still
/// produce to or fetch every partition of the largest topic in one request. Rationale: each
/// costs a log on some shard (about 2 KiB idle, opened 64 at a time) and a Metadata entry
/// (about 40 bytes, so 4 MB for the largest topic, under the 64 MiB frame); this bound keeps
/// one request from asking for millions.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 100_000;
const _: () =
    assert!(PARTITIONS_PER_TOPIC_MAX as usize <= quiver_proto::api::limits::REQUEST_ENTRIES_MAX);
/// Largest segment.bytes: segment positions are 32-bit in the indexes.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;
const _: () = assert!(SEGMENT_BYTES_MIN < SEGMENT_BYTES_MAX);

/// Why a topic name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name '{0}' is not allowed")]
    Reserved(String),
    #[error("topic name is {len} characters, longer than the maximum of {max}")]
    TooLong { len: usize, max: usize },
    #[error("topic name '{name}' contains '{bad}': only ASCII letters, digits, '.', '_' and '-' are allowed")]
    BadChar { name: String, bad: char },
    #[error("topic name is {len} bytes; this broker's file system allows topic names of at most {max} bytes (its directory names carry a 32-digit id)")]
    TooLongForFiles { len: usize, max: usize },
}

/// Checks a topic name against Kafka's rules.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved(name.to_string()));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(NameError::TooLong {
            len: name.chars().count(),
            max: TOPIC_NAME_BYTES_MAX,
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            name: name.to_string(),
            bad,
        });
    }
    Ok(())
}

/// The longest file name the file system holding `dir` accepts (`statvfs`'s `f_namemax`; 255
/// on ext4, xfs and btrfs), or 255 if it cannot be asked.
pub fn file_name_max(dir: &std::path::Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return 255;
    };
    // SAFETY: statvfs(3) reads the NUL-terminated path and fills the plain-data struct we own.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) == 0 && st.f_namemax > 0 {
            return st.f_namemax as usize;
        }
    }
    255
}

/// Checks that a topic's directory names fit the file system: `<name>.<id>`, and
/// `.deleted.<name>.<id>` while it is deleted (`dirs::TOPIC_DIR_NAME_OVERHEAD`). Kafka allows
/// 249-byte names because its directories are `<name>-<partition>`; Quiver's carry a 32-digit
/// id, so on a file system with 255-byte names a topic name may have 213 bytes.
pub fn check_name_fits(name: &str, file_name_max: usize) -> Result<(), NameError> {
    let max = file_name_max.saturating_sub(super::dirs::TOPIC_DIR_NAME_OVERHEAD);
    if name.len() > max {
        return Err(NameError::TooLongForFiles {
            len: name.len(),
            max,
        });
    }
    Ok(())
}

/// Internal topics (such as `__consumer_offsets`) are hidden from listings unless asked for.
pub fn is_internal(name: &str) -> bool {
    name.starts_with("__")
}

/// A topic's configuration with every value resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub max_message_bytes: u32,
    pub timestamp_type: TimestampType,
    pub flush_ms: u64,
    pub min_insync_replicas: u32,
}

/// Why a config is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigValueError {
    #[error("unknown topic config '{0}' (known: {known})", known = KNOWN_KEYS.join(", "))]
    UnknownKey(String),
    #[error("invalid value '{value}' for {key}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: String,
    },
}

/// Every topic config Quiver knows, by its Kafka name.
pub const KNOWN_KEYS: &[&str] = &[
    "cleanup.policy",
    "flush.ms",
    "max.message.bytes",
    "message.timestamp.type",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

fn bad(key: &str, value: &str, why: impl Into<String>) -> ConfigValueError {
    ConfigValueError::BadValue {
        key: key.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

fn parse_i64(key: &str, value: &str) -> Result<i64, ConfigValueError> {
    value
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "not an integer"))
}

impl TopicConfig {
    /// The broker defaults.
    pub fn defaults(c: &Config) -> TopicConfig {
        TopicConfig {
            retention_ms: c.default_retention_ms,
            retention_bytes: c.default_retention_bytes,
            segment_bytes: c.default_segment_bytes,
            segment_ms: c.default_segment_ms,
            max_message_bytes: c.default_max_message_bytes,
            timestamp_type: c.default_timestamp_type,
            flush_ms: c.default_flush_ms,
            min_insync_replicas: 1,
        }
    }

    /// Defaults with a topic's overrides applied. Overrides were checked when they were set, so
    /// an error here means the stored metadata is damaged.
    pub fn resolve(
        defaults: &TopicConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, ConfigValueError> {
        let mut c = defaults.clone();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// Sets one config by its Kafka name, checking the value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigValueError> {
        match key {
            "retention.ms" => {
                let v = parse_i64(key, value)?;
                if v < -1 || v == 0 {
                    return Err(bad(key, value, "must be positive, or -1 to keep forever"));
                }
                self.retention_ms = v;
            }
            "retention.bytes" => {
                let v = parse_i64(key, value)?;
                if v < -1 || v == 0 {
                    return Err(bad(key, value, "must be positive, or -1 for no limit"));
                }
                self.retention_bytes = v;
            }
            "segment.bytes" => {
                let v = parse_i64(key, value)?;
                if v < SEGMENT_BYTES_MIN as i64 || v > SEGMENT_BYTES_MAX as i64 {
                    return Err(bad(
                        key,
                        value,
                        format!("must be between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}"),
                    ));
                }
                self.segment_bytes = v as u64;
            }
            "segment.ms" => {
                let v = parse_i64(key, value)?;
                if v <= 0 {
                    return Err(bad(key, value, "must be positive"));
                }
                self.segment_ms = v;
            }
            "max.message.bytes" => {
                let v = parse_i64(key, value)?;
                if !(64..=i64::from(u32::MAX)).contains(&v) {
                    return Err(bad(key, value, "must be at least 64"));
                }
                self.max_message_bytes = v as u32;
            }
            "message.timestamp.type" => {
                self.timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(bad(key, value, "must be CreateTime or LogAppendTime")),
                }
            }
            "flush.ms" => {
                let v = parse_i64(key, value)?;
                if v < 0 {
                    return Err(bad(
                        key,
                        value,
                        "must be 0 (sync before acknowledging) or a positive interval",
                    ));
                }
                self.flush_ms = v as u64;
            }
            "min.insync.replicas" => {
                let v = parse_i64(key, value)?;
                if !(1..=i64::from(u16::MAX)).contains(&v) {
                    return Err(bad(key, value, "must be at least 1"));
                }
                self.min_insync_replicas = v as u32;
            }
            "cleanup.policy" => {
                if value != "delete" {
                    return Err(bad(
                        key,
                        value,
                        "only 'delete' is supported (compaction is not implemented yet)",
                    ));
                }
            }
            _ => return Err(ConfigValueError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// Every config as (Kafka name, value), for describe.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        vec![
            ("cleanup.policy", "delete".to_string()),
            ("flush.ms", self.flush_ms.to_string()),
            ("max.message.bytes", self.max_message_bytes.to_string()),
            (
                "message.timestamp.type",
                self.timestamp_type.as_str().to_string(),
            ),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("retention.ms", self.retention_ms.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        for ok in [
            "a",
            "orders",
            "orders.v2",
            "my_topic-1",
            "__consumer_offsets",
            &"x".repeat(249),
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        type Check = fn(&NameError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, NameError::Empty)),
            (".", |e| matches!(e, NameError::Reserved(_))),
            ("..", |e| matches!(e, NameError::Reserved(_))),
            ("a b", |e| matches!(e, NameError::BadChar { bad: ' ', .. })),
            ("a/b", |e| matches!(e, NameError::BadChar { bad: '/', .. })),
            ("héllo", |e| {
                matches!(e, NameError::BadChar { bad: 'é', .. })
            }),
        ];
        for (name, check) in cases {
            let err = validate_name(name).unwrap_err();
            assert!(check(&err), "{name}: {err}");
        }
        assert!(matches!(
            validate_name(&"x".repeat(250)),
            Err(NameError::TooLong { len: 250, max: 249 })
        ));
    }

    #[test]
    fn names_must_fit_the_file_system_with_the_directory_suffixes() {
        assert_eq!(check_name_fits(&"x".repeat(213), 255), Ok(()));
        assert_eq!(
            check_name_fits(&"x".repeat(214), 255),
            Err(NameError::TooLongForFiles { len: 214, max: 213 })
        );
        assert!(check_name_fits("a", 10).is_err());
        assert!(file_name_max(std::path::Path::new("/")) >= 14);
    }

    #[test]
    fn overrides_apply_over_defaults_and_bad_values_name_the_key() {
        let d = TopicConfig::defaults(&Config::defaults());
        let mut o = BTreeMap::new();
        o.insert("retention.bytes".to_string(), "1000".to_string());
        o.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let c = TopicConfig::resolve(&d, &o).unwrap();
        assert_eq!(c.retention_bytes, 1000);
        assert_eq!(c.timestamp_type, TimestampType::LogAppendTime);
        assert_eq!(c.retention_ms, d.retention_ms);

        let mut c = d.clone();
        for (k, v, needle) in [
            ("retention.ms", "0", "retention.ms"),
            ("retention.ms", "abc", "not an integer"),
            ("segment.bytes", "10", "segment.bytes"),
            ("cleanup.policy", "compact", "not implemented"),
            (
                "message.timestamp.type",
                "Now",
                "CreateTime or LogAppendTime",
            ),
            ("no.such", "1", "unknown topic config"),
        ] {
            let err = c.set(k, v).unwrap_err().to_string();
            assert!(err.contains(needle), "{k}={v}: {err}");
        }
        assert_eq!(c, d, "failed sets change nothing");
    }
}
