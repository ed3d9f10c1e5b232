//! `consume --from` and `--tail`: where reading starts, written the ways kcat and rpk users
//! write it, and parsed here without touching the network.

use quiver_client::TimestampMs;
use time::format_description::well_known::Rfc3339;

/// Where `consume` starts in each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained record.
    Beginning,
    /// After the newest record: only records written from now on.
    End,
    /// This offset in every partition (the reset policy, with a warning, where it is out of
    /// range).
    Offset(u64),
    /// The last N records of each partition (fewer where the partition holds fewer).
    Tail(u64),
    /// The first record whose timestamp is at or after this time; the end where none is.
    Time(TimestampMs),
}

/// Numbers at least this large given as an offset are probably epoch milliseconds (2001 on);
/// the out-of-range warning then suggests `@`.
pub const EPOCH_MS_LOOKALIKE_MIN: u64 = 1_000_000_000_000;

pub const FROM_HELP: &str = "\
Where to start in each partition:
  beginning | earliest   the oldest retained record (default)
  end | latest           only records written from now on
  42                     offset 42 (out of range: a warning, and the oldest record instead)
  -10                    the last 10 records (same as --tail 10)
  @1700000000000         the first record at or after this time, in ms since the Unix epoch
  2026-12-05             ... after midnight UTC of this date
  2026-12-05T10:00:00Z   ... after this RFC 3339 time (a time without a zone is UTC)";

/// Parses a `--from` value (see [`FROM_HELP`]).
pub fn parse_from(s: &str) -> Result<StartAt, String> {
    match s {
        "beginning" | "earliest" | "start" => return Ok(StartAt::Beginning),
        "end" | "latest" => return Ok(StartAt::End),
        _ => {}
    }
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if digits(s) {
        return s
            .parse()
            .map(StartAt::Offset)
            .map_err(|e| format!("offset '{s}': {e}"));
    }
    if let Some(n) = s.strip_prefix('-').filter(|n| digits(n)) {
        return n
            .parse()
            .map(StartAt::Tail)
            .map_err(|e| format!("'{s}': {e}"));
    }
    if let Some(ms) = s.strip_prefix('@') {
        return ms
            .parse::<i64>()
            .ok()
            .filter(|ms| *ms >= 0)
            .map(|ms| StartAt::Time(TimestampMs(ms)))
            .ok_or_else(|| {
                format!("'{s}' is not @ and a time in milliseconds since the Unix epoch")
            });
    }
    parse_time(s).map(StartAt::Time).map_err(|_| {
        format!(
            "'{s}' is not a position: use beginning, end, an offset (42), the last N records \
             (-10), a time in ms since the epoch (@1700000000000), a date (2026-12-05, UTC) or \
             an RFC 3339 time (2026-12-05T10:00:00Z)"
        )
    })
}

/// An RFC 3339 time, a date (midnight UTC) or a date and time without a zone (UTC).
pub fn parse_time(s: &str) -> Result<TimestampMs, String> {
    // Written out at run time: the `time` crate's `macros` feature is not on.
    let date = time::format_description::parse_borrowed::<1>("[year]-[month]-[day]")
        .expect("a valid description");
    let nanos = if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        t.unix_timestamp_nanos()
    } else if let Ok(d) = time::Date::parse(s, &date) {
        d.midnight().assume_utc().unix_timestamp_nanos()
    } else if let Ok(t) = time::OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339) {
        // A date and time without a zone: UTC.
        t.unix_timestamp_nanos()
    } else {
        return Err(format!("'{s}' is not a date or an RFC 3339 time"));
    };
    Ok(TimestampMs((nanos / 1_000_000) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_values_parse_as_kcat_and_rpk_users_write_them() {
        // (input, what it means)
        let cases: &[(&str, StartAt)] = &[
            ("beginning", StartAt::Beginning),
            ("earliest", StartAt::Beginning),
            ("start", StartAt::Beginning),
            ("end", StartAt::End),
            ("latest", StartAt::End),
            ("0", StartAt::Offset(0)),
            ("2000", StartAt::Offset(2000)),
            // A number that looks like epoch ms is still an offset: `@` says "time".
            ("1700000000000", StartAt::Offset(1_700_000_000_000)),
            ("-3", StartAt::Tail(3)),
            ("-0", StartAt::Tail(0)),
            (
                "@1700000000000",
                StartAt::Time(TimestampMs(1_700_000_000_000)),
            ),
            ("@0", StartAt::Time(TimestampMs(0))),
            ("2026-12-05", StartAt::Time(TimestampMs(1_796_428_800_000))),
            (
                "2026-12-05T10:00:00Z",
                StartAt::Time(TimestampMs(1_796_464_800_000)),
            ),
            (
                "2026-12-05T10:00:00",
                StartAt::Time(TimestampMs(1_796_464_800_000)),
            ),
            (
                "2024-05-01T12:00:00.250+02:00",
                StartAt::Time(TimestampMs(1_714_557_600_250)),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_from(input).as_ref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn from_refuses_what_it_cannot_place_and_says_what_it_takes() {
        for input in [
            "",
            "yesterday",
            "-",
            "-x",
            "@",
            "@-5",
            "@soon",
            "+3",
            "2026-13-05",
            "12:00",
            "99999999999999999999",
        ] {
            let e = parse_from(input).unwrap_err();
            assert!(!e.is_empty(), "{input}");
        }
        let e = parse_from("yesterday").unwrap_err();
        assert!(e.contains("RFC 3339") && e.contains("@1700000000000") && e.contains("-10"));
    }
}
