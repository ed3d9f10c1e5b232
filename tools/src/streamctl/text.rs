//! Records as text, both ways: the `-K` line (`KEY SEP VALUE`, written by consume and read back
//! by produce, so the escaping lives here once) and consume's `-f` templates.
//!
//! In a `-K` line the key is escaped and the value is not: the first separator not preceded
//! by a backslash ends the key, and everything after it is the value, byte for byte. So
//! values are sent exactly as typed (a backslash in a value is just a backslash), and any key
//! survives the round trip:
//!
//! ```text
//! key `a:b`, value `c:d`   ->  a\:b:c:d
//! key `x\`,  value `y`     ->  x\\:y
//! ```
//!
//! One limit: with a separator that overlaps itself (`::`, `abab`), a key that ends in part of
//! it (`a:` with `::`) runs into the separator and reads back differently. JSON lines
//! (`--output json` / `--input json`) carry any key.

use std::io::{self, Write};

use quiver_client::ConsumerRecord;

/// Appends `key` to `out` with `sep` and backslashes escaped (`\SEP`, `\\`).
pub fn escape_key(key: &[u8], sep: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < key.len() {
        if key[i] == b'\\' {
            out.extend_from_slice(b"\\\\");
            i += 1;
        } else if key[i..].starts_with(sep) {
            out.push(b'\\');
            out.extend_from_slice(sep);
            i += sep.len();
        } else {
            out.push(key[i]);
            i += 1;
        }
    }
}

/// Splits a line at its first unescaped `sep`: the key (unescaped) and the value (as it is).
/// `None` as the key when the line has no unescaped separator: then the whole line, as it is,
/// is the value. A backslash before anything but `sep` or a backslash stays a backslash.
pub fn split_line<'a>(line: &'a [u8], sep: &[u8]) -> (Option<Vec<u8>>, &'a [u8]) {
    let mut key = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if line[i] == b'\\' {
            let rest = &line[i + 1..];
            if rest.starts_with(sep) {
                key.extend_from_slice(sep);
                i += 1 + sep.len();
                continue;
            }
            if rest.first() == Some(&b'\\') {
                key.push(b'\\');
                i += 2;
                continue;
            }
            key.push(b'\\');
            i += 1;
        } else if line[i..].starts_with(sep) {
            return (Some(key), &line[i + sep.len()..]);
        } else {
            key.push(line[i]);
            i += 1;
        }
    }
    (None, line)
}

/// One piece of a `-f` template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Key,
    Value,
    Topic,
    Partition,
    Offset,
    Timestamp,
    Headers,
}

/// A kcat-style output template: `%k %v %t %p %o %T %h`, `%%`, and `\n \t \r \\`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            let field = match c {
                '%' => match chars.next() {
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    Some('k') => Piece::Key,
                    Some('v') => Piece::Value,
                    Some('t') => Piece::Topic,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('T') => Piece::Timestamp,
                    Some('h') => Piece::Headers,
                    Some(other) => {
                        return Err(format!(
                            "unknown field %{other} in the template: use %k %v %t %p %o %T %h, \
                             or %% for a percent sign"
                        ))
                    }
                    None => return Err("the template ends with a lone %; write %% for %".into()),
                },
                '\\' => {
                    let byte = match chars.next() {
                        Some('n') => b'\n',
                        Some('t') => b'\t',
                        Some('r') => b'\r',
                        Some('\\') => b'\\',
                        Some(other) => {
                            return Err(format!(
                                "unknown escape \\{other} in the template: use \\n \\t \\r or \\\\"
                            ))
                        }
                        None => {
                            return Err("the template ends with a lone \\; write \\\\ for \\".into())
                        }
                    };
                    literal.push(byte);
                    continue;
                }
                c => {
                    let mut buf = [0; 4];
                    literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(field);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template { pieces })
    }

    /// Writes one record through the template; `null` stands for an absent key or value.
    pub fn write(&self, out: &mut impl Write, r: &ConsumerRecord, null: &[u8]) -> io::Result<()> {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(bytes) => out.write_all(bytes)?,
                Piece::Key => out.write_all(r.key.as_deref().unwrap_or(null))?,
                Piece::Value => out.write_all(r.value.as_deref().unwrap_or(null))?,
                Piece::Topic => out.write_all(r.topic.as_bytes())?,
                Piece::Partition => write!(out, "{}", r.partition.0)?,
                Piece::Offset => write!(out, "{}", r.offset.0)?,
                Piece::Timestamp => write!(out, "{}", r.timestamp.0)?,
                Piece::Headers => {
                    for (i, h) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.write_all(b",")?;
                        }
                        out.write_all(h.key.as_bytes())?;
                        out.write_all(b"=")?;
                        out.write_all(&h.value)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The default text output: the value and a newline, or with `-K` the escaped key, the
/// separator and the value; `null` for an absent key or value.
pub fn write_line(
    out: &mut impl Write,
    r: &ConsumerRecord,
    sep: Option<&[u8]>,
    null: &[u8],
) -> io::Result<()> {
    if let Some(sep) = sep {
        match &r.key {
            Some(k) => {
                let mut escaped = Vec::with_capacity(k.len() + 2);
                escape_key(k, sep, &mut escaped);
                out.write_all(&escaped)?;
            }
            None => out.write_all(null)?,
        }
        out.write_all(sep)?;
    }
    out.write_all(r.value.as_deref().unwrap_or(null))?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use quiver_client::{Header, Offset, PartitionId, TimestampMs, TimestampType};

    #[test]
    fn lines_split_at_the_first_unescaped_separator() {
        // (line, separator, key, value)
        type Case<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>, &'a [u8]);
        let cases: &[Case] = &[
            (b"k:v", b":", Some(b"k"), b"v"),
            (b"k:v:w", b":", Some(b"k"), b"v:w"),
            (b"no separator", b":", None, b"no separator"),
            (b":v", b":", Some(b""), b"v"),
            (b"k:", b":", Some(b"k"), b""),
            (br"a\:b:c", b":", Some(b"a:b"), b"c"),
            (br"x\\:y", b":", Some(br"x\"), b"y"),
            (br"x\\\::y", b":", Some(br"x\:"), b"y"),
            // A backslash before anything else stays; values are never unescaped.
            (br"C:\dir", b"|", None, br"C:\dir"),
            (br"a\b|v\:\\", b"|", Some(br"a\b"), br"v\:\\"),
            (br"only\:escaped", b":", None, br"only\:escaped"),
            (br"trailing\", b":", None, br"trailing\"),
            // Multi-byte separators.
            (b"k::v::w", b"::", Some(b"k"), b"v::w"),
            (br"k\::x::v", b"::", Some(b"k::x"), b"v"),
            (
                "ключ→значение".as_bytes(),
                "→".as_bytes(),
                Some("ключ".as_bytes()),
                "значение".as_bytes(),
            ),
        ];
        for (line, sep, key, value) in cases {
            let (k, v) = split_line(line, sep);
            assert_eq!(
                (k.as_deref(), v),
                (*key, *value),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn escaped_keys_split_back_to_the_same_key_and_value() {
        let keys: &[&[u8]] = &[
            b"",
            b"plain",
            b":",
            b"a:b",
            br"\",
            br"x\",
            br"\:",
            b"::",
            b"\xff:\x00",
        ];
        let values: &[&[u8]] = &[b"", b"v", b":v:", br"\\", br"\:"];
        for sep in [&b":"[..], b"::", b"|"] {
            for key in keys {
                if sep == b"::" && key.ends_with(b":") {
                    continue; // the documented limit of self-overlapping separators
                }
                for value in values {
                    let mut line = Vec::new();
                    escape_key(key, sep, &mut line);
                    line.extend_from_slice(sep);
                    line.extend_from_slice(value);
                    let (k, v) = split_line(&line, sep);
                    assert_eq!((k.as_deref(), v), (Some(*key), *value), "{line:?}");
                }
            }
        }
    }

    fn record(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> ConsumerRecord {
        ConsumerRecord {
            topic: "orders".into(),
            partition: PartitionId(3),
            offset: Offset(42),
            timestamp: TimestampMs(1_700_000_000_000),
            timestamp_type: TimestampType::CreateTime,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers: vec![Header::new("a", "1"), Header::new("b", "x=y")],
        }
    }

    #[test]
    fn templates_print_fields_escapes_and_nulls() {
        // (template, key, value, null string, output)
        type Case = (
            &'static str,
            Option<&'static [u8]>,
            Option<&'static [u8]>,
            &'static str,
            &'static [u8],
        );
        let cases: &[Case] = &[
            ("%k=%v\\n", Some(b"k"), Some(b"v"), "", b"k=v\n"),
            (
                "%t/%p@%o %T\\t%h",
                Some(b"k"),
                Some(b"v"),
                "",
                b"orders/3@42 1700000000000\ta=1,b=x=y",
            ),
            ("100%% %v", None, Some(b"\xff"), "", b"100% \xff"),
            ("[%k][%v]", None, None, "", b"[][]"),
            ("[%k][%v]", None, None, "NULL", b"[NULL][NULL]"),
            ("[%k][%v]", Some(b""), Some(b""), "NULL", b"[][]"),
            ("\\\\ %v \\r", Some(b"k"), Some(b"v"), "", b"\\ v \r"),
            ("ключ %v", None, Some(b"v"), "", "ключ v".as_bytes()),
            ("", Some(b"k"), Some(b"v"), "", b""),
        ];
        for (template, key, value, null, want) in cases {
            let t = Template::parse(template).unwrap();
            let mut out = Vec::new();
            t.write(&mut out, &record(*key, *value), null.as_bytes())
                .unwrap();
            assert_eq!(out, *want, "{template}");
        }
    }

    #[test]
    fn templates_with_unknown_fields_or_escapes_are_refused() {
        for (template, needle) in [
            ("%x", "%x"),
            ("%", "lone %"),
            ("\\q", "\\q"),
            ("ends\\", "lone \\"),
        ] {
            let e = Template::parse(template).unwrap_err();
            assert!(e.contains(needle), "{template}: {e}");
        }
    }

    #[test]
    fn text_lines_escape_keys_and_show_nulls_as_asked() {
        // (separator, key, value, null string, output)
        type Case = (
            Option<&'static [u8]>,
            Option<&'static [u8]>,
            Option<&'static [u8]>,
            &'static str,
            &'static [u8],
        );
        let cases: &[Case] = &[
            (None, Some(b"k"), Some(b"v"), "", b"v\n"),
            (None, Some(b"k"), None, "", b"\n"),
            (None, Some(b"k"), None, "(null)", b"(null)\n"),
            (Some(b":"), Some(b"a:b"), Some(b"c:d"), "", b"a\\:b:c:d\n"),
            (Some(b":"), None, Some(b"v"), "", b":v\n"),
            (Some(b":"), None, Some(b"v"), "NULL", b"NULL:v\n"),
            (Some(b":"), Some(b""), None, "NULL", b":NULL\n"),
        ];
        for (sep, key, value, null, want) in cases {
            let mut out = Vec::new();
            write_line(&mut out, &record(*key, *value), *sep, null.as_bytes()).unwrap();
            assert_eq!(out, *want);
        }
    }
}
