//! Routing: which shard owns a key. Pure functions whose output is fixed by weft's own
//! definition, not by the CPU a build targets or a dependency's version, because it is
//! persisted: a checkpoint's state rows carry their key hash (the state index is
//! rebuilt from it) and sit on the shard [`shard_of`] gave them.
//!
//! The definition, [`ROUTING`]: the key hash is XXH3-64 (the published XXH3 algorithm,
//! whose output its specification fixes on every platform) of the encoded key
//! ([`crate::event::encode_key`]) with seed [`SEED`]; the shard is the high 64 bits of
//! `rotl(hash, 29) * 0x9E3779B97F4A7C15` times the shard count. The tests pin recorded
//! values, so a change to any part fails them; such a change must get a new
//! [`ROUTING`] name, and a checkpoint written under another name is re-routed at
//! restore (its rows re-hashed from their stored keys), never trusted.
//!
//! ahash stays where nothing is persisted (in-memory sets, `weft batch`, `weft
//! validate`): it is faster, and its output may differ between builds.

/// The routing function's name, recorded in every checkpoint manifest.
pub const ROUTING: &str = "xxh3-64/seed-243f6a8885a308d3/rotl29-mul-high/v1";

/// The XXH3 seed of the key hash.
pub const SEED: u64 = 0x243f_6a88_85a3_08d3;

/// The hash of an encoded key (see [`crate::event::encode_key`]).
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, SEED)
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

    /// XXH3-64 test vectors of its reference implementation (seed 0), so the crate
    /// behind `key_hash` is checked against the specification, not against itself.
    #[test]
    fn xxh3_matches_the_reference() {
        use xxhash_rust::xxh3::xxh3_64_with_seed;
        assert_eq!(xxh3_64_with_seed(b"", 0), 0x2D06_8005_38D3_94C2);
    }

    /// Recorded once (2026-12-05) and never to change while [`ROUTING`] keeps its name:
    /// keys of the sizes weft encodes (one u64, two u64s, a string, a long string that
    /// takes XXH3's vectorised path) and their shards for 1, 2, 3 and 16 shards.
    #[test]
    fn routing_is_pinned_to_recorded_values() {
        let long = vec![0x5Au8; 300];
        let keys: [&[u8]; 5] = [b"", &42u64.to_le_bytes(), &[7u8; 16], b"\x05\x00\x00\x00hello", &long];
        let got: Vec<(u64, [u32; 4])> = keys
            .iter()
            .map(|k| {
                let h = key_hash(k);
                (h, [1, 2, 3, 16].map(|n| shard_of(h, n)))
            })
            .collect();
        let want: Vec<(u64, [u32; 4])> = RECORDED.to_vec();
        assert_eq!(got, want, "the routing function changed: give it a new ROUTING name");
    }

    const RECORDED: [(u64, [u32; 4]); 5] = [
        (3305381855338814158, [0, 1, 2, 13]),
        (5905345869969920484, [0, 0, 0, 2]),
        (6568992891569631127, [0, 0, 0, 4]),
        (8073843547889103507, [0, 0, 0, 3]),
        (7034556118932601656, [0, 1, 2, 10]),
    ];
}
