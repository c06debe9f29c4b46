//! Collects a streamed body into one contiguous buffer, never past a limit.

use bytes::Bytes;

/// A body being collected.
///
/// A body that arrives in one chunk (the common case) is kept as that chunk, with no copy. A
/// body in several chunks is copied once into a buffer sized from the `Content-Length` when
/// known, and grown geometrically but never beyond the limit otherwise.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    first: Option<Bytes>,
    rest: Vec<u8>,
    len: usize,
    expected: usize,
}

/// The body crossed the limit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OverLimit;

impl Buffer {
    /// A buffer for a body that announces `expected` bytes (0 if unknown).
    pub(crate) fn new(expected: usize) -> Self {
        Self {
            expected,
            ..Self::default()
        }
    }

    /// Appends a chunk, unless that would make the body longer than `limit`.
    pub(crate) fn push(&mut self, chunk: Bytes, limit: usize) -> Result<(), OverLimit> {
        let len = self.len.checked_add(chunk.len()).ok_or(OverLimit)?;
        if len > limit {
            return Err(OverLimit);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk);
        } else {
            if self.rest.capacity() < len {
                let grown = self.rest.capacity().saturating_mul(2);
                let target = len.max(self.expected).max(grown).min(limit);
                self.rest.reserve_exact(target - self.rest.len());
            }
            if let Some(first) = self.first.take() {
                self.rest.extend_from_slice(&first);
            }
            self.rest.extend_from_slice(&chunk);
        }
        self.len = len;
        Ok(())
    }

    /// The whole body.
    pub(crate) fn finish(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => Bytes::from(self.rest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_chunk_is_kept_without_copy() {
        let chunk = Bytes::from_static(b"hello");
        let mut buffer = Buffer::new(5);
        buffer.push(chunk.clone(), 5).unwrap();
        let body = buffer.finish();
        assert_eq!(body.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn chunks_are_joined_in_order() {
        let mut buffer = Buffer::new(0);
        for part in ["ab", "", "cd", "e"] {
            buffer.push(Bytes::from(part), 5).unwrap();
        }
        assert_eq!(buffer.finish(), "abcde");
    }

    #[test]
    fn limit_is_enforced_before_buffering_past_it() {
        let mut buffer = Buffer::new(0);
        buffer.push(Bytes::from_static(b"1234"), 5).unwrap();
        assert_eq!(buffer.push(Bytes::from_static(b"56"), 5), Err(OverLimit));
        assert!(buffer.rest.capacity() <= 5);
        assert_eq!(
            Buffer::new(0).push(Bytes::from_static(b"123456"), 5),
            Err(OverLimit)
        );
    }

    #[test]
    fn capacity_never_exceeds_the_limit() {
        let limit = 1000;
        let mut buffer = Buffer::new(0);
        for _ in 0..100 {
            buffer
                .push(Bytes::from_static(b"0123456789"), limit)
                .unwrap();
            assert!(buffer.rest.capacity() <= limit);
        }
        assert_eq!(buffer.finish().len(), limit);
    }

    #[test]
    fn announced_length_sizes_the_buffer_once() {
        let mut buffer = Buffer::new(300);
        buffer.push(Bytes::from(vec![1; 100]), 1000).unwrap();
        buffer.push(Bytes::from(vec![2; 100]), 1000).unwrap();
        let capacity = buffer.rest.capacity();
        buffer.push(Bytes::from(vec![3; 100]), 1000).unwrap();
        assert_eq!(buffer.rest.capacity(), capacity);
        assert_eq!(capacity, 300);
    }
}
