//! The scratch consul's TLS identity: one self-signed ECDSA P-256 certificate, made in
//! process for each scratch, that is both its CA (`ca_file`) and its server and client
//! certificate (`cert_file`, `key_file`). With `verify_incoming_rpc`, only a holder of its
//! key (the scratch alone) may speak RPC or raft to it.
//!
//! Made here rather than with `consul tls ca create` and `consul tls cert create`: those are
//! two starts of a 70 MB binary, a fifth of a restore's time.

use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};

/// The names it is valid for: consul checks `server.<datacenter>.consul` (with
/// `verify_server_hostname`) when it dials a server.
pub fn names(datacenter: &str) -> [String; 2] {
    [format!("server.{datacenter}.consul"), "localhost".to_string()]
}

/// A certificate and its private key, both PEM.
pub struct Identity {
    pub cert_pem: String,
    /// PKCS#8: written 0600.
    pub key_pem: String,
}

/// Makes a fresh key and its self-signed certificate for `datacenter`'s server names and
/// 127.0.0.1, usable as a CA and for both ends of TLS.
pub fn make(datacenter: &str) -> anyhow::Result<Identity> {
    let rng = SystemRandom::new();
    fn no_key<E>(_: E) -> anyhow::Error {
        anyhow::anyhow!("cannot make an ECDSA key for the scratch consul")
    }
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).map_err(no_key)?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).map_err(no_key)?;
    let mut serial = [0u8; 16];
    rng.fill(&mut serial).map_err(no_key)?;
    // A positive INTEGER, not starting with a zero byte.
    serial[0] = (serial[0] & 0x7f) | 0x40;

    let ecdsa_sha256 = seq(&[oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02])]);
    let name = seq(&[set(&[seq(&[
        oid(&[0x55, 0x04, 0x03]),
        tlv(0x0c, b"raptiformica snapshot scratch"),
    ])])]);
    // Fixed and wide: the key lives as long as the scratch, a skewed clock must not matter.
    let validity = seq(&[tlv(0x17, b"200101000000Z"), tlv(0x17, b"491231235959Z")]);
    let public_key = seq(&[
        seq(&[
            oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
        ]),
        bit_string(pair.public_key().as_ref()),
    ]);
    let mut alt_names: Vec<Vec<u8>> = names(datacenter).iter().map(|n| tlv(0x82, n.as_bytes())).collect();
    alt_names.push(tlv(0x87, &[127, 0, 0, 1]));
    let extensions = seq(&[
        // basicConstraints: a CA (it signs itself), critical.
        extension(&[0x55, 0x1d, 0x13], true, &seq(&[tlv(0x01, &[0xff])])),
        // keyUsage: digitalSignature and keyCertSign, critical.
        extension(&[0x55, 0x1d, 0x0f], true, &tlv(0x03, &[0x02, 0x84])),
        // extKeyUsage: serverAuth and clientAuth.
        extension(
            &[0x55, 0x1d, 0x25],
            false,
            &seq(&[
                oid(&[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01]),
                oid(&[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02]),
            ]),
        ),
        // subjectAltName.
        extension(&[0x55, 0x1d, 0x11], false, &seq(&alt_names)),
    ]);
    let tbs = seq(&[
        tlv(0xa0, &tlv(0x02, &[2])),
        tlv(0x02, &serial),
        ecdsa_sha256.clone(),
        name.clone(),
        validity,
        name,
        public_key,
        tlv(0xa3, &extensions),
    ]);
    let signature = pair
        .sign(&rng, &tbs)
        .map_err(|_| anyhow::anyhow!("cannot sign the scratch consul's certificate"))?;
    let cert = seq(&[tbs, ecdsa_sha256, bit_string(signature.as_ref())]);
    Ok(Identity {
        cert_pem: pem("CERTIFICATE", &cert),
        key_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
    })
}

/// A DER tag, length and value.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(value);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn set(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x31, &parts.concat())
}

/// An OBJECT IDENTIFIER from its encoded content.
fn oid(content: &[u8]) -> Vec<u8> {
    tlv(0x06, content)
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0u8][..], bytes].concat())
}

fn extension(id: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let mut parts = vec![oid(id)];
    if critical {
        parts.push(tlv(0x01, &[0xff]));
    }
    parts.push(tlv(0x04, value));
    seq(&parts)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }

    /// Splits one DER element off `bytes`: (tag, value, rest).
    fn element(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (bytes[0], bytes[1] as usize);
        let (len, start) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            (bytes[2..2 + n].iter().fold(0, |a, b| a << 8 | *b as usize), 2 + n)
        };
        (tag, &bytes[start..start + len], &bytes[start + len..])
    }

    #[test]
    fn lengths_take_the_long_form_from_128_bytes() {
        assert_eq!(tlv(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        assert_eq!(&tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(&tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn the_certificate_is_signed_by_its_own_key_and_names_the_server() {
        let a = make("raptiformica").unwrap();
        let b = make("raptiformica").unwrap();
        assert_ne!(a.key_pem, b.key_pem, "a fresh key each time");
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(a.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let cert = der(&a.cert_pem);
        let (tag, body, rest) = element(&cert);
        assert_eq!((tag, rest.len()), (0x30, 0));
        let (_, _, after_tbs) = element(body);
        let tbs_der = &body[..body.len() - after_tbs.len()];
        let (_, _, sig) = element(after_tbs);
        let (tag, sig, _) = element(sig);
        assert_eq!((tag, sig[0]), (0x03, 0));
        // The key in the PEM verifies the signature over the TBS part.
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &der(&a.key_pem), &SystemRandom::new()).unwrap();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, pair.public_key().as_ref())
            .verify(tbs_der, &sig[1..])
            .unwrap();
        let text = String::from_utf8_lossy(tbs_der);
        assert!(
            text.contains("server.raptiformica.consul") && text.contains("localhost"),
            "{text}"
        );
    }
}
