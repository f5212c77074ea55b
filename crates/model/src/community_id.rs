//! Community ID v1 (corelight/community-id-spec): a direction-independent hash of a flow's
//! 5-tuple, so that a sensor's flow and an endpoint's connection can be joined exactly. The
//! parsers fill it in for sessions and the attribution engine computes it from MDE rows; the
//! spec's test vectors are checked in the ingest crate's tests.

use std::net::IpAddr;

use base64::Engine;
use sha1::{Digest, Sha1};

/// IP protocol numbers the ID distinguishes.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMP6: u8 = 58;

/// `"1:"` + base64(SHA-1), as Suricata and Zeek write it by default. `None` when the ID
/// cannot be computed: address families differ, or a port-carrying protocol lacks a port.
/// For ICMP and ICMPv6, `src_port` is the message type and `dst_port` the code.
pub fn community_id(
    src: IpAddr,
    dst: IpAddr,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    proto: u8,
    seed: u16,
) -> Option<String> {
    let digest = digest(src, dst, src_port, dst_port, proto, seed)?;
    Some(format!(
        "1:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    ))
}

/// The "no base64" variant: `"1:"` + 40 lowercase hex digits.
pub fn community_id_hex(
    src: IpAddr,
    dst: IpAddr,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    proto: u8,
    seed: u16,
) -> Option<String> {
    let digest = digest(src, dst, src_port, dst_port, proto, seed)?;
    let mut s = String::with_capacity(42);
    s.push_str("1:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    Some(s)
}

/// IP protocol number for the names sensors write (`TCP`, `udp`, `IPv6-ICMP`, `SCTP`, `17`).
/// `ipv6` says the flow's address family, so that a bare `icmp` on an IPv6 flow means ICMPv6.
pub fn protocol_number(name: &str, ipv6: bool) -> Option<u8> {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "tcp" => Some(TCP),
        "udp" => Some(UDP),
        "sctp" => Some(SCTP),
        "icmp" if ipv6 => Some(ICMP6),
        "icmp" => Some(ICMP),
        "ipv6-icmp" | "icmp6" | "icmpv6" => Some(ICMP6),
        _ => n.parse::<u8>().ok(),
    }
}

/// ICMP type → the type of its request/response counterpart (Zeek's table, as in the spec).
fn icmp_counterpart(proto: u8, ty: u16) -> Option<u16> {
    let pairs: &[(u16, u16)] = if proto == ICMP {
        &[(8, 0), (13, 14), (15, 16), (10, 9), (17, 18)]
    } else {
        &[
            (128, 129),
            (130, 131),
            (133, 134),
            (135, 136),
            (139, 140),
            (144, 145),
        ]
    };
    pairs.iter().find_map(|&(a, b)| {
        if a == ty {
            Some(b)
        } else if b == ty {
            Some(a)
        } else {
            None
        }
    })
}

fn addr_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn digest(
    src: IpAddr,
    dst: IpAddr,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    proto: u8,
    seed: u16,
) -> Option<[u8; 20]> {
    if src.is_ipv4() != dst.is_ipv4() {
        return None;
    }
    let (ports, one_way) = match proto {
        TCP | UDP | SCTP => (Some((src_port?, dst_port?)), false),
        ICMP | ICMP6 => {
            let ty = src_port?;
            match icmp_counterpart(proto, ty) {
                Some(other) => (Some((ty, other)), false),
                None => (Some((ty, dst_port?)), true),
            }
        }
        _ => (None, false),
    };
    let (mut a, mut b) = (addr_bytes(src), addr_bytes(dst));
    let mut ports = ports;
    let ordered = match ports {
        Some((sp, dp)) => (&a, sp) < (&b, dp),
        None => a <= b,
    };
    if !one_way && !ordered {
        std::mem::swap(&mut a, &mut b);
        ports = ports.map(|(sp, dp)| (dp, sp));
    }
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(&a);
    h.update(&b);
    h.update([proto, 0]);
    if let Some((sp, dp)) = ports {
        h.update(sp.to_be_bytes());
        h.update(dp.to_be_bytes());
    }
    Some(h.finalize().into())
}
