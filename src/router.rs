//! Routing: which shard owns a key. Pure functions, stable across runs and restarts
//! (fixed hash seeds), so a restarted job routes every key to the same shard.

/// Fixed seeds: routing and state must not change between runs.
const SEEDS: [u64; 4] = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89];

fn hasher() -> &'static ahash::RandomState {
    static H: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
    H.get_or_init(|| ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]))
}

/// The hash of an encoded key (see [`crate::event::encode_key`]).
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    hasher().hash_one(key)
}

/// The shard that owns `hash`, in `0..shards`. The hash is re-mixed first so that the
/// bits used here are independent of the ones the state's hash table uses.
#[inline]
pub fn shard_of(hash: u64, shards: u32) -> u32 {
    let mixed = hash.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed as u128 * shards as u128) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(key_hash(b"abc"), key_hash(b"abc"));
        let mut counts = [0u32; 4];
        for i in 0u64..40_000 {
            let s = shard_of(key_hash(&i.to_le_bytes()), 4);
            counts[s as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        assert_eq!(shard_of(u64::MAX, 1), 0);
    }
}
