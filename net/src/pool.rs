//! Reuse of large frame buffers.
//!
//! A request frame is read whole into one buffer and handed to the service, which drops it when
//! it is done (after the produce path has copied the batch into the log). Allocating a fresh
//! megabyte for every frame costs a page fault per 4 KiB once the allocator has handed the
//! memory back to the kernel, which glibc does as soon as more than its trim threshold sits
//! free: profiled at about 8% of a core's time on the upload path. The driver instead remembers
//! the large frames it lent out and takes one back once nobody else holds it.
//!
//! Bound: the frames remembered here total at most `bytes_max` per core (the oldest is
//! forgotten first, so its memory goes back to the allocator when its last holder drops it).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Frames smaller than this come from the allocator's small bins, which do not fault.
pub(crate) const POOLED_FRAME_BYTES_MIN: usize = 64 * 1024;
/// What the pool may keep per core, counted in frame bytes.
pub(crate) const POOL_BYTES_MAX: usize = 32 * 1024 * 1024;

pub(crate) struct FramePool {
    /// Frames handed out, oldest first; each is one whole buffer (the clone the pool keeps).
    lent: VecDeque<Bytes>,
    bytes: usize,
    bytes_max: usize,
    /// Buffers taken back (for the endpoint's counters).
    pub reused: u64,
}

impl FramePool {
    pub fn new(bytes_max: usize) -> FramePool {
        FramePool {
            lent: VecDeque::new(),
            bytes: 0,
            bytes_max,
            reused: 0,
        }
    }

    /// An empty buffer with room for `total` bytes: a returned frame's buffer when one is
    /// free and large enough, else a new one.
    pub fn take(&mut self, total: usize) -> BytesMut {
        if total >= POOLED_FRAME_BYTES_MIN {
            let free = self
                .lent
                .iter()
                .position(|b| b.len() >= total && b.is_unique());
            if let Some(i) = free {
                let b = self.lent.remove(i).expect("index from position");
                self.bytes -= b.len();
                // Unique, so this hands back the whole allocation.
                if let Ok(mut buf) = b.try_into_mut() {
                    buf.clear();
                    self.reused += 1;
                    return buf;
                }
            }
        }
        BytesMut::with_capacity(total)
    }

    /// Remembers a frame about to be handed out, so that its buffer can come back.
    pub fn lend(&mut self, frame: &Bytes) {
        let len = frame.len();
        if len < POOLED_FRAME_BYTES_MIN || len > self.bytes_max {
            return;
        }
        self.lent.push_back(frame.clone());
        self.bytes += len;
        while self.bytes > self.bytes_max {
            let old = self
                .lent
                .pop_front()
                .expect("bytes > 0 means a frame is held");
            self.bytes -= old.len();
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pool: &mut FramePool, len: usize, fill: u8) -> Bytes {
        let mut b = pool.take(len);
        b.resize(len, fill);
        let f = b.freeze();
        pool.lend(&f);
        f
    }

    #[test]
    fn a_dropped_frame_buffer_comes_back_and_a_held_one_does_not() {
        let mut pool = FramePool::new(POOL_BYTES_MAX);
        let a = frame(&mut pool, 1 << 20, 1);
        let a_ptr = a.as_ptr();
        let held = a.slice(10..20); // the service still holds part of it
        drop(a);
        let b = pool.take(1 << 20);
        assert_ne!(
            b.as_ptr(),
            a_ptr,
            "a buffer still referenced must not be reused"
        );
        assert_eq!(pool.reused, 0);
        drop(held);
        let c = pool.take(1 << 20);
        assert_eq!(c.as_ptr(), a_ptr, "the released buffer is reused");
        assert!(c.is_empty() && c.capacity() >= 1 << 20);
        assert_eq!(pool.reused, 1);
        assert_eq!(pool.held(), 0);
    }

    #[test]
    fn small_frames_and_too_small_buffers_are_not_pooled() {
        let mut pool = FramePool::new(POOL_BYTES_MAX);
        drop(frame(&mut pool, 1000, 0));
        assert_eq!(pool.held(), 0);
        drop(frame(&mut pool, 100_000, 0));
        let big = pool.take(200_000);
        assert!(big.capacity() >= 200_000);
        assert_eq!(pool.reused, 0, "a 100 kB buffer cannot hold a 200 kB frame");
    }

    #[test]
    fn what_the_pool_keeps_is_bounded() {
        let mut pool = FramePool::new(4 << 20);
        let frames: Vec<Bytes> = (0..10).map(|i| frame(&mut pool, 1 << 20, i)).collect();
        assert_eq!(pool.held(), 4 << 20);
        drop(frames);
        for _ in 0..4 {
            pool.take(1 << 20);
        }
        assert_eq!(pool.reused, 4);
        assert_eq!(pool.held(), 0);
    }
}
