//! The flow hash, shared so that userspace tools and tests compute exactly what the data
//! path computes (and two directors with the same configuration pick the same real).

/// Bob Jenkins' final mix of three words (as in the kernel's jhash).
#[inline(always)]
const fn final_mix(mut a: u32, mut b: u32, mut c: u32) -> u32 {
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    c
}

const INIT: u32 = 0xdead_beef;

/// Hash of a 16-byte address (folded to three words) and one extra word.
#[inline(always)]
pub const fn hash_addr(addr: &[u8; 16], extra: u32, seed: u32) -> u32 {
    let w0 = u32::from_le_bytes([addr[0], addr[1], addr[2], addr[3]]);
    let w1 = u32::from_le_bytes([addr[4], addr[5], addr[6], addr[7]]);
    let w2 = u32::from_le_bytes([addr[8], addr[9], addr[10], addr[11]]);
    let w3 = u32::from_le_bytes([addr[12], addr[13], addr[14], addr[15]]);
    hash_addr_words([w0, w1, w2, w3], extra, seed)
}

/// [`hash_addr`] of the address whose four little-endian words are `w` (on a
/// little-endian machine, the address read as words: four loads instead of sixteen).
#[inline(always)]
pub const fn hash_addr_words(w: [u32; 4], extra: u32, seed: u32) -> u32 {
    final_mix(
        w[0] ^ INIT ^ seed,
        w[1] ^ w[3] ^ INIT,
        w[2] ^ extra ^ INIT.wrapping_add(seed),
    )
}

/// Hash of a connection: source address, source and destination port, protocol. The
/// destination address is the VIP and identical for every flow of a service, so it adds
/// nothing.
#[inline(always)]
pub const fn hash_flow(src: &[u8; 16], sport_be: u16, dport_be: u16, proto: u8) -> u32 {
    let ports = ((sport_be as u32) << 16) | dport_be as u32;
    hash_addr(src, ports, proto as u32)
}

/// [`hash_flow`] with the source address as [`hash_addr_words`] takes it.
#[inline(always)]
pub const fn hash_flow_words(src: [u32; 4], sport_be: u16, dport_be: u16, proto: u8) -> u32 {
    let ports = ((sport_be as u32) << 16) | dport_be as u32;
    hash_addr_words(src, ports, proto as u32)
}

/// Hash of the source only (sh, and mh without port): the source port is included when
/// `with_port` (sh-port / mh-port).
#[inline(always)]
pub const fn hash_source(src: &[u8; 16], sport_be: u16, with_port: bool) -> u32 {
    let extra = if with_port { sport_be as u32 } else { 0 };
    hash_addr(src, extra, 0x5eed)
}

/// [`hash_source`] with the source address as [`hash_addr_words`] takes it.
#[inline(always)]
pub const fn hash_source_words(src: [u32; 4], sport_be: u16, with_port: bool) -> u32 {
    let extra = if with_port { sport_be as u32 } else { 0 };
    hash_addr_words(src, extra, 0x5eed)
}

/// Bucket of a connection-table key (its four words), under the table's random seed.
/// All four words count: the reply entries of NAT share their source with every other
/// connection to the same real.
#[inline(always)]
pub const fn hash_conn(words: [u32; 4], seed: u32) -> u32 {
    final_mix(
        words[0] ^ INIT ^ seed,
        words[1] ^ INIT,
        words[2] ^ words[3].rotate_left(16) ^ INIT.wrapping_add(seed),
    )
}

/// Odd 64-bit multiplier of [`hash_conn6`] (2^64 / golden ratio).
const CONN6_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// Bucket of an IPv6 connection-table key (its five 8-byte words), under the table's
/// seed: each word xored into the state, which is then multiplied by an odd constant
/// and folded (`h ^= h >> 32`). Each step is a bijection of the state, so two keys
/// that differ in one word never collide, and the state a word meets depends on the
/// seed through the carries of the products before it, so keys that collide under
/// one seed do not under another. Five short steps on the 64-bit multiplier rather
/// than four rounds of the three-word mix over ten words: the hash is on the path of
/// every IPv6 packet, and the mix's dependent chain was the largest share of what an
/// IPv6 packet costs more than an IPv4 one.
#[inline(always)]
pub const fn hash_conn6(w: [u64; 5], seed: u32) -> u32 {
    let mut h = (seed as u64) ^ CONN6_MUL.rotate_left(32);
    let mut i = 0;
    while i < 5 {
        h = (h ^ w[i]).wrapping_mul(CONN6_MUL);
        h ^= h >> 32;
        i += 1;
    }
    // The high half of one more product: every bit of the state moves it.
    (h.wrapping_mul(CONN6_MUL) >> 32) as u32
}

/// The two candidate buckets of a connection-table key with hash `h`, in a table of
/// `mask + 1` buckets (a power of two): the hash's low bits, and the high word of its
/// 64-bit Fibonacci product, which every bit of the hash moves; so keys sharing one
/// bucket rarely share the other, at any table size.
#[inline(always)]
pub const fn conn_buckets(h: u32, mask: u32) -> (u32, u32) {
    let second = ((h as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32;
    (h & mask, second & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn different_ports_give_different_hashes() {
        let a = [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_ne!(hash_flow(&a, 1000, 80, 6), hash_flow(&a, 1001, 80, 6));
        assert_ne!(hash_flow(&a, 1000, 80, 6), hash_flow(&a, 1000, 80, 17));
        assert_eq!(hash_source(&a, 1, false), hash_source(&a, 2, false));
        assert_ne!(hash_source(&a, 1, true), hash_source(&a, 2, true));
        let w = [u32::from_le_bytes([10, 0, 0, 1]), 0, 0, 0];
        assert_eq!(hash_flow_words(w, 1000, 80, 6), hash_flow(&a, 1000, 80, 6));
        assert_eq!(hash_source_words(w, 9, true), hash_source(&a, 9, true));
    }

    #[test]
    fn every_word_of_an_ipv6_key_moves_its_hash() {
        let base = [
            0x0000_0000_b80d_0120,
            0x0100_0000_0000_0000,
            0x0000_0000_b80d_0120,
            0x0200_0000_0000_0000,
            0x0000_0006_5000_9c40,
        ];
        let h = hash_conn6(base, 7);
        for i in 0..5 {
            for bit in [0, 17, 40, 63] {
                let mut w = base;
                w[i] ^= 1 << bit;
                assert_ne!(hash_conn6(w, 7), h, "word {i} bit {bit}");
            }
        }
        assert_ne!(hash_conn6(base, 8), h, "seed");
    }

    #[test]
    fn ipv6_keys_of_one_client_spread_over_the_buckets() {
        extern crate std;
        // Keys that differ only in the source port, or only in the low bits of the
        // source's interface identifier (the usual spread of IPv6 clients): their
        // first buckets fill a table as random draws would.
        let base = [
            0x0000_0000_b80d_0120,
            0,
            0x0000_0000_b80d_0120,
            1 << 56,
            6 << 32,
        ];
        let bits = 16;
        let mask = (1u32 << bits) - 1;
        let draws = 20_000u64;
        let buckets = (1u64 << bits) as f64;
        let expected = buckets * (1.0 - (1.0 - 1.0 / buckets).powi(draws as i32));
        for word in [1usize, 4] {
            let mut firsts = std::collections::BTreeSet::new();
            for n in 0..draws {
                let mut w = base;
                w[word] ^= if word == 4 { n } else { n << 48 };
                firsts.insert(conn_buckets(hash_conn6(w, 42), mask).0);
            }
            assert!(
                firsts.len() as f64 >= 0.9 * expected,
                "word {word}: {} distinct buckets of {draws} draws, ~{expected:.0} expected",
                firsts.len()
            );
        }
    }

    #[test]
    fn keys_sharing_a_bucket_rarely_share_the_other() {
        extern crate std;
        // For small and large tables: the hashes that give one first bucket (up to
        // 20,000 of them) have second buckets spread over the table as random draws
        // would be, not following the first.
        for bits in [8u32, 16, 20, 24] {
            let mask = (1u32 << bits) - 1;
            let draws = 20_000u32.min(1 << (32 - bits));
            let mut seconds = std::collections::BTreeSet::new();
            for high in 0..draws {
                let (a, b) = conn_buckets((high << bits) | 5, mask);
                assert_eq!(a, 5);
                seconds.insert(b);
            }
            let buckets = (1u64 << bits) as f64;
            let expected = buckets * (1.0 - (1.0 - 1.0 / buckets).powi(draws as i32));
            assert!(
                seconds.len() as f64 >= 0.9 * expected,
                "{bits} bits: {} distinct second buckets of {draws} draws, ~{expected:.0} expected",
                seconds.len()
            );
        }
    }
}
