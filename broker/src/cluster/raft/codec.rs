//! The byte formats of the Raft store: framed, CRC32-checked records and the payloads in them.
//!
//! A record is `[len: u32 LE][crc32 of payload: u32 LE][payload: len bytes]`, `len` in
//! `1..=RECORD_BYTES_MAX`. The first payload byte says what follows (`KIND_*`); integers are
//! little endian, byte strings are a `u32` length then the bytes. Hand-written rather than
//! protobuf so the store needs no codec crate and the format is fixed by this file alone.
//!
//! Example: a hard state `{term: 2, vote: 1, commit: 5}` is a 25-byte payload
//! `[2][2u64][1u64][5u64]`, framed as 33 bytes on disk.

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};

/// The largest record payload: bounds the allocation recovery makes for a length it read, before
/// the CRC can vouch for it. Metadata entries are a few KiB; a snapshot has its own file.
pub const RECORD_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// The bytes a record's frame adds to its payload.
pub const FRAME_BYTES: usize = 8;

pub const KIND_ENTRY: u8 = 1;
pub const KIND_HARD_STATE: u8 = 2;
pub const KIND_CONF_STATE: u8 = 3;
pub const KIND_SNAPSHOT: u8 = 4;

/// One decoded log record.
#[derive(Debug)]
pub enum Record {
    Entry(Entry),
    HardState(HardState),
    ConfState(ConfState),
}

/// What a read of one record at a position found.
#[derive(Debug)]
pub enum Framed<'a> {
    /// A whole record whose CRC matched, and its framed length.
    Record(&'a [u8], usize),
    /// Not a valid record here (length out of bounds, past the end, or a CRC mismatch).
    Bad,
    /// Exactly at the end of the bytes.
    End,
}

/// Appends `payload` framed as a record.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("payload bounded by RECORD_BYTES_MAX");
    assert!(
        (1..=RECORD_BYTES_MAX).contains(&len),
        "record payload of {len} bytes"
    );
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads the record framed at `pos` of `buf`.
pub fn unframe(buf: &[u8], pos: usize) -> Framed<'_> {
    let rest = &buf[pos..];
    if rest.is_empty() {
        return Framed::End;
    }
    if rest.len() < FRAME_BYTES {
        return Framed::Bad;
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    // A zero length is refused: a zero-filled tail would otherwise pass (crc32 of nothing is 0).
    if len == 0 || len > RECORD_BYTES_MAX || (len as usize) > rest.len() - FRAME_BYTES {
        return Framed::Bad;
    }
    let payload = &rest[FRAME_BYTES..FRAME_BYTES + len as usize];
    if crc32fast::hash(payload) != crc {
        return Framed::Bad;
    }
    Framed::Record(payload, FRAME_BYTES + len as usize)
}

pub fn encode_entry(out: &mut Vec<u8>, e: &Entry) {
    out.push(KIND_ENTRY);
    out.push(e.get_entry_type() as u8);
    put_u64(out, e.term);
    put_u64(out, e.index);
    put_bytes(out, &e.data);
    put_bytes(out, &e.context);
}

pub fn encode_hard_state(out: &mut Vec<u8>, hs: &HardState) {
    out.push(KIND_HARD_STATE);
    put_u64(out, hs.term);
    put_u64(out, hs.vote);
    put_u64(out, hs.commit);
}

pub fn encode_conf_state(out: &mut Vec<u8>, cs: &ConfState) {
    out.push(KIND_CONF_STATE);
    put_conf_state(out, cs);
}

pub fn encode_snapshot(out: &mut Vec<u8>, s: &Snapshot) {
    out.push(KIND_SNAPSHOT);
    let meta = s.get_metadata();
    put_u64(out, meta.index);
    put_u64(out, meta.term);
    put_conf_state(out, meta.get_conf_state());
    put_bytes(out, &s.data);
}

/// Decodes a log record's payload; `None` if it is not one (a bug or corruption the CRC missed).
pub fn decode_record(payload: &[u8]) -> Option<Record> {
    let mut r = Reader(payload);
    let record = match r.u8()? {
        KIND_ENTRY => {
            let mut e = Entry::default();
            e.set_entry_type(match r.u8()? {
                0 => EntryType::EntryNormal,
                1 => EntryType::EntryConfChange,
                2 => EntryType::EntryConfChangeV2,
                _ => return None,
            });
            e.term = r.u64()?;
            e.index = r.u64()?;
            e.data = r.bytes()?;
            e.context = r.bytes()?;
            Record::Entry(e)
        }
        KIND_HARD_STATE => {
            let hs = HardState {
                term: r.u64()?,
                vote: r.u64()?,
                commit: r.u64()?,
                ..HardState::default()
            };
            Record::HardState(hs)
        }
        KIND_CONF_STATE => Record::ConfState(r.conf_state()?),
        _ => return None,
    };
    r.0.is_empty().then_some(record)
}

pub fn decode_snapshot(payload: &[u8]) -> Option<Snapshot> {
    let mut r = Reader(payload);
    if r.u8()? != KIND_SNAPSHOT {
        return None;
    }
    let mut s = Snapshot::default();
    let meta = s.mut_metadata();
    meta.index = r.u64()?;
    meta.term = r.u64()?;
    meta.set_conf_state(r.conf_state()?);
    s.data = r.bytes()?;
    r.0.is_empty().then_some(s)
}

/// What an entry costs against raft's `max_size` limits (its payload, near enough).
pub fn entry_size(e: &Entry) -> u64 {
    (e.data.len() + e.context.len() + 24) as u64
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("bounded by RECORD_BYTES_MAX");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(b);
}

fn put_ids(out: &mut Vec<u8>, ids: &[u64]) {
    out.extend_from_slice(&u32::try_from(ids.len()).expect("few voters").to_le_bytes());
    ids.iter().for_each(|id| put_u64(out, *id));
}

fn put_conf_state(out: &mut Vec<u8>, cs: &ConfState) {
    put_ids(out, &cs.voters);
    put_ids(out, &cs.learners);
    put_ids(out, &cs.voters_outgoing);
    put_ids(out, &cs.learners_next);
    out.push(u8::from(cs.auto_leave));
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let n = self.u32()? as usize;
        Some(Bytes::copy_from_slice(self.take(n)?))
    }
    fn ids(&mut self) -> Option<Vec<u64>> {
        let n = self.u32()? as usize;
        // Checked before allocating: a count is trusted only as far as the bytes behind it.
        if n > self.0.len() / 8 {
            return None;
        }
        (0..n).map(|_| self.u64()).collect()
    }
    fn conf_state(&mut self) -> Option<ConfState> {
        let cs = ConfState {
            voters: self.ids()?,
            learners: self.ids()?,
            voters_outgoing: self.ids()?,
            learners_next: self.ids()?,
            auto_leave: match self.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            },
            ..ConfState::default()
        };
        Some(cs)
    }
}
