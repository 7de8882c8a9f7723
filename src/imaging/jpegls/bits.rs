//! Bit reader for JPEG-LS entropy-coded segments (ITU-T T.87 A.1 and D.1):
//! the 0xFF bit-stuffing rule, marker detection at the end of a segment,
//! and Golomb codes with the LIMIT escape (A.5.3).

/// Bit reader over one entropy-coded segment. The segment ends at the first
/// 0xFF followed by a byte with its high bit set (a marker); after a 0xFF
/// data byte the next byte carries only 7 bits (its stuffed high bit is 0).
/// Reading past the end yields zero bits and is reported by `overrun`.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pub pos: usize,
    pub end: usize,
    cache: u64,
    nbits: u32,
    padded: u32,
    prev_ff: bool,
}

/// Position of the marker that ends the entropy-coded data starting at `start`.
fn find_marker(data: &[u8], start: usize) -> usize {
    data.get(start..)
        .and_then(|tail| tail.windows(2).position(|w| w[0] == 0xFF && w[1] >= 0x80))
        .map_or(data.len(), |i| start + i)
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8], start: usize) -> Self {
        let end = find_marker(data, start);
        BitReader {
            data,
            pos: start,
            end,
            cache: 0,
            nbits: 0,
            padded: 0,
            prev_ff: false,
        }
    }

    fn refill(&mut self) {
        while self.nbits <= 56 {
            let byte = if self.pos < self.end {
                self.data.get(self.pos).copied()
            } else {
                None
            };
            match byte {
                Some(b) => {
                    self.pos += 1;
                    if self.prev_ff {
                        self.cache |= u64::from(b & 0x7F) << (57 - self.nbits);
                        self.nbits += 7;
                    } else {
                        self.cache |= u64::from(b) << (56 - self.nbits);
                        self.nbits += 8;
                    }
                    self.prev_ff = b == 0xFF;
                }
                None => {
                    self.nbits += 8;
                    self.padded = self.padded.saturating_add(8);
                }
            }
        }
    }

    /// True once bits beyond the end of the segment have been consumed.
    pub(crate) fn overrun(&self) -> bool {
        self.padded > self.nbits
    }

    #[inline]
    fn consume(&mut self, n: u32) {
        self.cache = self.cache.checked_shl(n).unwrap_or(0);
        self.nbits -= n;
    }

    #[inline]
    pub(crate) fn read_bit(&mut self) -> bool {
        if self.nbits == 0 {
            self.refill();
        }
        let bit = self.cache >> 63 != 0;
        self.consume(1);
        bit
    }

    /// Reads `n` bits, `n` <= 56.
    #[inline]
    pub(crate) fn read_bits(&mut self, n: u32) -> u64 {
        if n == 0 {
            return 0;
        }
        if self.nbits < n {
            self.refill();
        }
        let v = self.cache >> (64 - n);
        self.consume(n);
        v
    }

    /// Golomb code of order k with the length limit `limit` (T.87 A.5.3);
    /// None for a prefix longer than the limit allows.
    #[inline]
    pub(crate) fn read_golomb(&mut self, k: u32, limit: u32, qbpp: u32) -> Option<u64> {
        let max_zeros = limit.saturating_sub(qbpp + 1);
        let mut zeros = 0u32;
        loop {
            if self.nbits < 32 {
                self.refill();
            }
            let lz = self.cache.leading_zeros().min(self.nbits);
            if lz < self.nbits {
                zeros += lz;
                self.consume(lz + 1);
                break;
            }
            zeros += lz;
            self.consume(lz);
            if zeros > max_zeros {
                return None;
            }
        }
        if zeros > max_zeros {
            None
        } else if zeros == max_zeros {
            Some(self.read_bits(qbpp) + 1)
        } else if k > 40 {
            None
        } else {
            Some((u64::from(zeros) << k) | self.read_bits(k))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffed_bit_is_skipped() {
        // 0xFF then 0x7F: 8 ones, then 7 ones (the stuffed 0 bit is dropped).
        let data = [0xFF, 0x7F, 0x00];
        let mut br = BitReader::new(&data, 0);
        assert_eq!(br.read_bits(15), 0x7FFF);
        assert!(!br.read_bit());
        assert!(!br.overrun());
    }

    #[test]
    fn segment_ends_at_marker() {
        let data = [0xA5, 0xFF, 0xD9];
        let mut br = BitReader::new(&data, 0);
        assert_eq!(br.end, 1);
        assert_eq!(br.read_bits(8), 0xA5);
        assert!(!br.overrun());
        assert_eq!(br.read_bits(1), 0);
        assert!(br.overrun());
    }

    #[test]
    fn golomb_codes() {
        // k = 2: prefix 001 then 10 -> (2 << 2) | 2 = 10.
        let data = [0b0011_0000];
        assert_eq!(BitReader::new(&data, 0).read_golomb(2, 32, 8), Some(10));
        // Escape: LIMIT - qbpp - 1 = 23 zeros, a 1, then qbpp = 8 bits + 1.
        let data = [0, 0, 0b0000_0001, 0b0000_0011, 0];
        assert_eq!(BitReader::new(&data, 0).read_golomb(0, 32, 8), Some(4));
        // A longer prefix is invalid.
        let data = [0, 0, 0, 0x80];
        assert_eq!(BitReader::new(&data, 0).read_golomb(0, 32, 8), None);
    }
}
