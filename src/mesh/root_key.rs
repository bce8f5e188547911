//! Overlay keys that keep the overlay's tree rooted at a hub.
//!
//! yggdrasil 0.4 routes along a spanning tree whose root is the node with the lowest public
//! key, and a node takes as its parent the peer it first heard the root's announcement from
//! (not the nearest one). With random keys the root was a random client: its announcements
//! raced along the ring links, and at 60 nodes the tree was 6 levels deep, so a packet
//! between two clients crossed up to a dozen overlay daemons where the hubs (every node links
//! with each consul server) would have carried it in two; and every new node had a chance to
//! become the root and re-shape the whole tree. A consul server's key starts with at least
//! [`HUB_ZERO_BITS`] zero bits and every other node's with fewer, so a server is the root
//! while one is up, every node is one link from it, and a new client never takes its place.
//! A client promoted later keeps its key (its address is its key): the first servers stay
//! the root candidates.

/// The leading zero bits of a hub's key (about 4,000 tries: a few milliseconds of work).
pub const HUB_ZERO_BITS: u32 = 12;

/// Which kind of key a node gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grade {
    /// A consul server's: sorts before every leaf's.
    Hub,
    /// Every other node's.
    Leaf,
}

/// An ed25519 key pair as yggdrasil writes it: the private key is the seed and then the
/// public key (Go's layout), both in hex.
#[derive(Debug, Clone)]
pub struct KeyPair {
    pub private_hex: String,
    pub public_hex: String,
}

/// A new key pair of `grade`.
pub fn generate(grade: Grade) -> anyhow::Result<KeyPair> {
    let mut seed = [0u8; 32];
    loop {
        getrandom::getrandom(&mut seed).map_err(|e| anyhow::anyhow!("no randomness for the overlay key: {e}"))?;
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
            .map_err(|e| anyhow::anyhow!("cannot derive an overlay key: {e}"))?;
        let public = ring::signature::KeyPair::public_key(&pair).as_ref();
        if grade_of(public) == grade {
            return Ok(KeyPair {
                private_hex: hex(&[&seed[..], public].concat()),
                public_hex: hex(public),
            });
        }
    }
}

/// The grade of a public key: a hub's when it starts with at least [`HUB_ZERO_BITS`] zero bits.
pub fn grade_of(public: &[u8]) -> Grade {
    if leading_zero_bits(public) >= HUB_ZERO_BITS {
        Grade::Hub
    } else {
        Grade::Leaf
    }
}

fn leading_zero_bits(bytes: &[u8]) -> u32 {
    let mut n = 0;
    for b in bytes {
        n += b.leading_zeros();
        if *b != 0 {
            break;
        }
    }
    n
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn every_hub_key_sorts_before_every_leaf_key_as_the_tree_compares_them() {
        let hubs: Vec<KeyPair> = (0..3).map(|_| generate(Grade::Hub).unwrap()).collect();
        let leaves: Vec<KeyPair> = (0..50).map(|_| generate(Grade::Leaf).unwrap()).collect();
        for h in &hubs {
            assert_eq!(grade_of(&unhex(&h.public_hex)), Grade::Hub);
            for l in &leaves {
                // yggdrasil compares the keys byte by byte: the lower one is the better root.
                assert!(
                    unhex(&h.public_hex) < unhex(&l.public_hex),
                    "{} !< {}",
                    h.public_hex,
                    l.public_hex
                );
            }
        }
    }

    #[test]
    fn the_private_key_is_the_seed_then_the_public_key() {
        let k = generate(Grade::Leaf).unwrap();
        assert_eq!(k.private_hex.len(), 128);
        assert_eq!(&k.private_hex[64..], k.public_hex);
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&unhex(&k.private_hex[..64])).unwrap();
        assert_eq!(hex(ring::signature::KeyPair::public_key(&pair).as_ref()), k.public_hex);
    }

    #[test]
    fn leading_zero_bits_count_across_bytes() {
        assert_eq!(leading_zero_bits(&[0, 0x0f, 0xff]), 12);
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(grade_of(&[0, 0x10]), Grade::Leaf);
        assert_eq!(grade_of(&[0, 0x08]), Grade::Hub);
    }
}
