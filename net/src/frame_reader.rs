//! Reading one request (or response) frame from a stream's data as it arrives: the sans-IO part
//! of the transport's receive side, written against [`ChunkSource`] so that it is driven by
//! quinn-proto's `Chunks` in the driver and by arbitrary bytes in its tests.
//!
//! The 4-byte length prefix is read and checked (`frame::check_len_prefix`) before anything is
//! allocated; the caller then allocates (`alloc`, from the frame pool) and the rest is copied in
//! as it comes. Data past the frame, a stream that ends early, and a prefix over the limit are
//! `Invalid`; a reset is `Reset`. Whatever the bytes and however they are split, it never
//! panics and never holds more than the frame's announced size (tested below on random input).

use bytes::{Bytes, BytesMut};
use quinn_proto::{Chunks, ReadError, VarInt};
use quiver_proto::frame::{self, FrameError, FrameHeader, FRAME_HEADER_BYTES};

use crate::pool::FramePool;

/// Where a stream's data comes from: up to `max` bytes at a time, in order; `Ok(None)` once the
/// stream is finished; `Err(Blocked)` when nothing more has arrived yet.
pub(crate) trait ChunkSource {
    fn next(&mut self, max: usize) -> Result<Option<Bytes>, ReadError>;
}

/// quinn-proto's ordered stream reader.
pub(crate) struct QuinnChunks<'a, 'b>(pub &'a mut Chunks<'b>);

impl ChunkSource for QuinnChunks<'_, '_> {
    fn next(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        self.0.next(max).map(|c| c.map(|c| c.bytes))
    }
}

/// Reads one frame from a stream: the 4-byte prefix first, checked before any allocation.
#[derive(Default)]
pub(crate) struct FrameReader {
    prefix: [u8; 4],
    got: usize,
    /// Total frame size once the prefix is checked.
    pub(crate) total: Option<usize>,
    buf: Option<BytesMut>,
}

pub(crate) enum ReadOutcome {
    /// Wait for more stream data.
    Blocked,
    /// The prefix is checked; call `alloc` to continue.
    NeedAlloc(usize),
    /// The whole frame; `fin` tells whether the stream's end was seen right after it.
    Done {
        bytes: Bytes,
        fin: bool,
    },
    Invalid(FrameError),
    Reset(VarInt),
    /// The stream's receive side no longer exists.
    Closed,
}

impl FrameReader {
    pub(crate) fn alloc(&mut self, pool: &mut FramePool) {
        let total = self.total.expect("alloc after the prefix is checked");
        let mut buf = pool.take(total);
        buf.extend_from_slice(&self.prefix);
        self.buf = Some(buf);
    }

    pub(crate) fn read(
        &mut self,
        chunks: &mut impl ChunkSource,
        frame_bytes_max: usize,
    ) -> ReadOutcome {
        loop {
            match (self.total, &mut self.buf) {
                (None, _) => match chunks.next(4 - self.got) {
                    Ok(Some(c)) => {
                        self.prefix[self.got..self.got + c.len()].copy_from_slice(&c);
                        self.got += c.len();
                        if self.got == 4 {
                            match frame::check_len_prefix(self.prefix, frame_bytes_max) {
                                Ok(total) => {
                                    self.total = Some(total);
                                    return ReadOutcome::NeedAlloc(total);
                                }
                                Err(e) => return ReadOutcome::Invalid(e),
                            }
                        }
                    }
                    Ok(None) => {
                        return ReadOutcome::Invalid(FrameError::Truncated {
                            got: self.got,
                            need: FRAME_HEADER_BYTES,
                        })
                    }
                    Err(ReadError::Blocked) => return ReadOutcome::Blocked,
                    Err(ReadError::Reset(code)) => return ReadOutcome::Reset(code),
                },
                (Some(total), None) => return ReadOutcome::NeedAlloc(total),
                (Some(total), Some(buf)) => {
                    let need = total - buf.len();
                    if need == 0 {
                        let bytes = std::mem::take(buf).freeze();
                        let fin = match chunks.next(1) {
                            Ok(None) => true,
                            Ok(Some(_)) => {
                                return ReadOutcome::Invalid(FrameError::TooLarge {
                                    len: total + 1,
                                    max: total,
                                })
                            }
                            Err(ReadError::Blocked) => false,
                            Err(ReadError::Reset(code)) => return ReadOutcome::Reset(code),
                        };
                        self.buf = None;
                        return ReadOutcome::Done { bytes, fin };
                    }
                    match chunks.next(need) {
                        Ok(Some(c)) => buf.extend_from_slice(&c),
                        Ok(None) => {
                            return ReadOutcome::Invalid(FrameError::Truncated {
                                got: buf.len(),
                                need: total,
                            })
                        }
                        Err(ReadError::Blocked) => return ReadOutcome::Blocked,
                        Err(ReadError::Reset(code)) => return ReadOutcome::Reset(code),
                    }
                }
            }
        }
    }

    /// The header, when enough of the frame has arrived to decode it (for error responses).
    pub(crate) fn header(&self) -> Option<FrameHeader> {
        let buf = self.buf.as_ref()?;
        if buf.len() < FRAME_HEADER_BYTES {
            return None;
        }
        let b = &buf[..];
        Some(FrameHeader {
            api_key: u16::from_le_bytes([b[4], b[5]]),
            api_version: u16::from_le_bytes([b[6], b[7]]),
            correlation_id: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A stream's data in chunks of random sizes, blocking at random between them, then either
    /// finished or reset.
    struct Feed {
        data: Vec<u8>,
        pos: usize,
        rng: rand::rngs::StdRng,
        end_with_reset: bool,
    }

    impl ChunkSource for Feed {
        fn next(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
            if self.pos == self.data.len() {
                return if self.end_with_reset {
                    Err(ReadError::Reset(VarInt::from_u32(7)))
                } else {
                    Ok(None)
                };
            }
            if self.rng.gen_bool(0.3) {
                return Err(ReadError::Blocked);
            }
            let n = self
                .rng
                .gen_range(1..=max.min(self.data.len() - self.pos).max(1));
            let n = n.min(self.data.len() - self.pos);
            let c = Bytes::copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(Some(c))
        }
    }

    fn valid_frame(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
        let body: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
        let payload: Vec<u8> = (0..rng.gen_range(0..2000)).map(|_| rng.gen()).collect();
        frame::encode(
            &FrameHeader {
                api_key: rng.gen(),
                api_version: 0,
                correlation_id: rng.gen(),
                flags: 0,
            },
            &body,
            &[&payload],
        )
        .to_vec()
    }

    /// Drives a reader over `data` to its outcome (or until it stops making progress).
    fn drive(feed: &mut Feed, max: usize) -> ReadOutcome {
        let mut reader = FrameReader::default();
        let mut pool = FramePool::new(1 << 20);
        for _ in 0..100_000 {
            match reader.read(feed, max) {
                ReadOutcome::Blocked => continue,
                ReadOutcome::NeedAlloc(total) => {
                    assert!(total <= max && total >= FRAME_HEADER_BYTES);
                    reader.alloc(&mut pool);
                }
                done => return done,
            }
        }
        panic!("no outcome");
    }

    /// Random frames, valid ones cut, extended, damaged or split any way, and random bytes:
    /// the outcome is always one the driver handles, and a frame comes out whole and exact.
    /// Seeds are fixed, so a failure names the case that reproduces it.
    #[test]
    fn any_bytes_split_any_way_give_a_frame_or_a_typed_error() {
        const MAX: usize = 4096;
        for case in 0..4_000u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(case);
            let frame = valid_frame(&mut rng);
            let (data, expect_frame) = match case % 6 {
                0 | 1 => (frame.clone(), frame.len() <= MAX),
                // Cut short.
                2 => {
                    let cut = rng.gen_range(0..frame.len());
                    (frame[..cut].to_vec(), false)
                }
                // Data after the frame.
                3 => {
                    let mut d = frame.clone();
                    d.extend((0..rng.gen_range(1..50)).map(|_| rng.gen::<u8>()));
                    (d, false)
                }
                // A byte flipped anywhere (the length prefix included).
                4 => {
                    let mut d = frame.clone();
                    let i = rng.gen_range(0..d.len());
                    d[i] ^= 1 << rng.gen_range(0..8);
                    let intact = i >= 4 && d.len() <= MAX;
                    (d, intact)
                }
                // Random bytes.
                _ => (
                    (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
                    false,
                ),
            };
            let end_with_reset = case % 11 == 0;
            let mut feed = Feed {
                data: data.clone(),
                pos: 0,
                rng: rand::rngs::StdRng::seed_from_u64(case ^ 0x5eed),
                end_with_reset,
            };
            match drive(&mut feed, MAX) {
                ReadOutcome::Done { bytes, fin } => {
                    let total = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize + 4;
                    assert_eq!(&bytes[..], &data[..total], "case {case}");
                    if fin {
                        assert_eq!(
                            total,
                            data.len(),
                            "case {case}: nothing after a finished frame"
                        );
                    }
                    if expect_frame && !end_with_reset {
                        assert!(fin || feed.pos < data.len(), "case {case}");
                    }
                }
                ReadOutcome::Invalid(_) | ReadOutcome::Reset(_) => {
                    assert!(
                        !expect_frame || end_with_reset,
                        "case {case}: a valid frame refused"
                    );
                }
                ReadOutcome::Closed | ReadOutcome::Blocked | ReadOutcome::NeedAlloc(_) => {
                    panic!("case {case}: not an outcome of a finished stream")
                }
            }
        }
    }
}
