//! Helpers the masker's tests share.

use super::Masker;

pub(super) fn mask_all(values: &[&[u8]], input: &[u8]) -> Vec<u8> {
    let mut m = Masker::new(values.iter().copied());
    let mut out = m.push(input);
    out.extend(m.finish());
    out
}

/// Mask `input` split into chunks of every size 1..=n; all must agree.
pub(super) fn mask_chunked(values: &[&[u8]], input: &[u8]) -> Vec<u8> {
    let whole = mask_all(values, input);
    for size in 1..=input.len().max(1) {
        let mut m = Masker::new(values.iter().copied());
        let mut out = Vec::new();
        for c in input.chunks(size) {
            out.extend(m.push(c));
        }
        out.extend(m.finish());
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&whole),
            "chunk size {size}"
        );
    }
    whole
}

pub(super) fn s(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap()
}

/// A small deterministic PRNG (xorshift): `next(n)` is in `0..n`.
pub(super) fn prng(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    }
}

pub(super) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
