//! FNV-1a, 64 bits (Fowler–Noll–Vo; offset basis 0xcbf29ce484222325, prime
//! 0x100000001b3): a fingerprint that is stable across releases, which std's
//! hasher is not. Used for the data-set hold-out split and run fingerprints.

/// The FNV-1a offset basis: the state before any byte.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Continues an FNV-1a hash from `state` over `bytes` (start from [`FNV_OFFSET`];
/// chaining calls equals one call over the concatenation).
pub fn fnv1a(bytes: &[u8], state: u64) -> u64 {
    bytes
        .iter()
        .fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// FNV-1a of `bytes` from the offset basis.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a(bytes, FNV_OFFSET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_test_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a(b"bar", fnv1a(b"foo", FNV_OFFSET)), fnv1a64(b"foobar"));
    }
}
