//! The window finder's filter, 32 bytes at a time with AVX2 where the CPU has it.
//!
//! The word filter ([`super::maybe_all_hash`] on one word in every 24 bytes) costs a dozen
//! instructions per 24 bytes, and on text its words of eight lowercase letters let a few percent
//! of them through to the closer look. Here every byte is classified (digit or lowercase letter,
//! or neither) 32 at a time, and only a whole 16-byte block of such bytes is let through, which
//! text almost never has. A run the filter let through is grown to its end 32 bytes at a time
//! too ([`hash_run_end`]), which is what a long run (a file of `0`s) costs.
//!
//! This module holds the crate's only `unsafe`: the unaligned loads, and the call of the AVX2
//! function once the CPU is known to have AVX2. Everything else is safe code.
#![cfg_attr(
    target_arch = "x86_64",
    expect(
        unsafe_code,
        reason = "loading 32 bytes into a vector register and calling the AVX2 code"
    )
)]

/// The filter's unit: a run of at least 32 bytes covers a whole block that starts at a multiple
/// of this.
pub(crate) const BLOCK: usize = 16;

/// Whether [`next_block`] can be used (the CPU has AVX2); otherwise the word filter is.
#[inline]
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The first block start `at`, a multiple of [`BLOCK`] with `from <= at < until`, whose block
/// `haystack[at..at + BLOCK]` lies within the haystack and holds only ASCII digits and lowercase
/// letters. `from` must be a multiple of [`BLOCK`].
///
/// Only call this when [`available`] says so; otherwise it falls back to a plain loop.
#[inline]
pub(crate) fn next_block(haystack: &[u8], from: usize, until: usize) -> Option<usize> {
    debug_assert!(from.is_multiple_of(BLOCK));
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX2 (checked just above; the check is a cached load), which is
        // all `next_block_avx2` requires of its caller.
        return unsafe { next_block_avx2(haystack, from, until) };
    }
    next_block_plain(haystack, from, until)
}

/// Whether `byte` is an ASCII digit or lowercase letter.
fn is_digit_or_lower(byte: u8) -> bool {
    byte.is_ascii_digit() || byte.is_ascii_lowercase()
}

/// [`next_block`] one byte at a time: the reference the fast path is tested against.
pub(crate) fn next_block_plain(haystack: &[u8], from: usize, until: usize) -> Option<usize> {
    (from..until.min(haystack.len()))
        .step_by(BLOCK)
        .find(|&at| {
            haystack
                .get(at..at + BLOCK)
                .is_some_and(|block| block.iter().all(|&byte| is_digit_or_lower(byte)))
        })
}

/// [`next_block`] with AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn next_block_avx2(haystack: &[u8], from: usize, until: usize) -> Option<usize> {
    use std::arch::x86_64::_mm256_movemask_epi8;
    const FULL: u32 = 0xffff;
    let until = until.min(haystack.len());
    let mut at = from;
    // Two blocks per step, as long as both lie within the haystack.
    while at < until {
        let Some(bytes) = haystack.get(at..at + 2 * BLOCK) else {
            break;
        };
        let vector = load(bytes);
        let mask = u32::from_ne_bytes(_mm256_movemask_epi8(digit_or_lower(vector)).to_ne_bytes());
        if mask & FULL == FULL {
            return Some(at);
        }
        if mask >> BLOCK == FULL && at + BLOCK < until {
            return Some(at + BLOCK);
        }
        at += 2 * BLOCK;
    }
    // The last block, if only one is left.
    if at < until {
        return next_block_plain(haystack, at, until);
    }
    None
}

/// Where the run of hash-alphabet bytes (Nix's base32: digits and lowercase letters but `e`,
/// `o`, `u`, `t`) that goes on at `from` ends: the first position at or after `from` that holds
/// another byte, or the haystack's length.
#[inline]
pub(crate) fn hash_run_end(haystack: &[u8], from: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: the CPU has AVX2 (checked just above), which is all `hash_run_end_avx2`
        // requires of its caller.
        return unsafe { hash_run_end_avx2(haystack, from) };
    }
    super::hash_run_end_words(haystack, from)
}

/// [`hash_run_end`] one byte at a time: the reference the fast path is tested against.
pub(crate) fn hash_run_end_plain(haystack: &[u8], from: usize) -> usize {
    let from = from.min(haystack.len());
    haystack[from..]
        .iter()
        .position(|&byte| !super::HASH_BYTE[usize::from(byte)])
        .map_or(haystack.len(), |at| from + at)
}

/// [`hash_run_end`] with AVX2, 32 bytes a step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn hash_run_end_avx2(haystack: &[u8], from: usize) -> usize {
    use std::arch::x86_64::{
        _mm256_andnot_si256, _mm256_cmpeq_epi8, _mm256_movemask_epi8, _mm256_or_si256,
        _mm256_set1_epi8,
    };
    let left_out = [b'e', b'o', b'u', b't'].map(|byte| _mm256_set1_epi8(i8::from_ne_bytes([byte])));
    let mut at = from;
    while let Some(bytes) = haystack.get(at..at + 2 * BLOCK) {
        let vector = load(bytes);
        let [e, o, u, t] = left_out.map(|byte| _mm256_cmpeq_epi8(vector, byte));
        let left = _mm256_or_si256(_mm256_or_si256(e, o), _mm256_or_si256(u, t));
        let is_hash = _mm256_andnot_si256(left, digit_or_lower(vector));
        let mask = u32::from_ne_bytes(_mm256_movemask_epi8(is_hash).to_ne_bytes());
        if mask != u32::MAX {
            return at + (!mask).trailing_zeros() as usize;
        }
        at += 2 * BLOCK;
    }
    hash_run_end_plain(haystack, at)
}

/// The first 32 bytes of `bytes` (which must hold at least 32) in a vector register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn load(bytes: &[u8]) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256};
    let bytes = &bytes[..2 * BLOCK];
    // SAFETY: `bytes` is 32 bytes long, the size of `__m256i`, and `loadu` reads them whatever
    // their alignment (the pointer is never dereferenced as a `__m256i`).
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "an unaligned load, which takes a pointer of any alignment"
    )]
    unsafe {
        _mm256_loadu_si256(bytes.as_ptr().cast::<__m256i>())
    }
}

/// Per byte of `vector`, all ones where it is an ASCII digit or lowercase letter, else zero.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn digit_or_lower(vector: std::arch::x86_64::__m256i) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::{
        _mm256_cmpeq_epi8, _mm256_min_epu8, _mm256_or_si256, _mm256_set1_epi8, _mm256_sub_epi8,
    };
    // `byte - base <= span` as unsigned bytes: the byte lies in `base..=base + span`.
    let digits = _mm256_sub_epi8(vector, _mm256_set1_epi8(0x30));
    let is_digit = _mm256_cmpeq_epi8(_mm256_min_epu8(digits, _mm256_set1_epi8(9)), digits);
    let lowers = _mm256_sub_epi8(vector, _mm256_set1_epi8(0x61));
    let is_lower = _mm256_cmpeq_epi8(_mm256_min_epu8(lowers, _mm256_set1_epi8(25)), lowers);
    _mm256_or_si256(is_digit, is_lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector run end is the byte-by-byte one, from every start, on runs broken by bytes next
    /// to the edges of the alphabet and by the four letters it leaves out.
    #[test]
    fn hash_run_end_matches_the_plain_loop() {
        let breaks = b"/09:`az{A\x80\xffeout-";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..600usize {
            let len = round % 150;
            // Mostly alphabet bytes, so that long runs are common.
            let haystack = crate::tests::mostly(
                &mut state,
                len,
                b"0123456789abcdfghijklmnpqrsvwxyz",
                breaks,
                2 + u64::try_from(round % 70).unwrap(),
            );
            for from in 0..=len + 1 {
                let plain = hash_run_end_plain(&haystack, from);
                assert_eq!(
                    hash_run_end(&haystack, from),
                    plain,
                    "{haystack:?} from {from}"
                );
                assert_eq!(
                    crate::hash_run_end_words(&haystack, from),
                    plain,
                    "{haystack:?} from {from}"
                );
            }
        }
    }

    /// The vector filter finds the block the byte-by-byte one finds, from every start and up to
    /// every limit, on bytes next to the edges of both classes.
    #[test]
    fn next_block_matches_the_plain_loop() {
        if !available() {
            return;
        }
        let edges = b"/09:`az{A\x80\xffe";
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..400usize {
            let len = round % 130;
            // Mostly class bytes, so that whole blocks are common.
            let haystack = crate::tests::mostly(
                &mut state,
                len,
                b"0123456789abcdefghijklmnopqrstuvwxyz",
                edges,
                2 + u64::try_from(round % 40).unwrap(),
            );
            for from in (0..=len + BLOCK).step_by(BLOCK) {
                for until in from..=len + 2 {
                    assert_eq!(
                        // SAFETY: `available` said the CPU has AVX2.
                        unsafe { next_block_avx2(&haystack, from, until) },
                        next_block_plain(&haystack, from, until),
                        "{haystack:?} from {from} until {until}"
                    );
                }
            }
        }
    }
}
