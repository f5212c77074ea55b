//! Community ID v1 (seed 0) for TCP and UDP, computed from an MDE row so it can be compared
//! with the one the NDR reports. SHA-1 and base64 are written out here because the engine
//! keeps its dependencies to the model, the KQL printer and serde.

use std::net::IpAddr;

use culprit_model::detection::Protocol;

use crate::view::NetRow;

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// `1:<base64(sha1(seed . saddr . daddr . proto . 0 . sport . dport))>` with the endpoints in
/// canonical order.
pub fn community_id(
    proto: Protocol,
    a: IpAddr,
    a_port: u16,
    b: IpAddr,
    b_port: u16,
) -> Option<String> {
    let proto_num: u8 = match proto {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        _ => return None,
    };
    let (ab, bb) = (ip_bytes(a), ip_bytes(b));
    if ab.len() != bb.len() {
        return None;
    }
    let ordered = ab < bb || (ab == bb && a_port < b_port);
    let ((s, sp), (d, dp)) = if ordered {
        ((ab, a_port), (bb, b_port))
    } else {
        ((bb, b_port), (ab, a_port))
    };
    let mut buf = vec![0u8, 0u8];
    buf.extend_from_slice(&s);
    buf.extend_from_slice(&d);
    buf.push(proto_num);
    buf.push(0);
    buf.extend_from_slice(&sp.to_be_bytes());
    buf.extend_from_slice(&dp.to_be_bytes());
    Some(format!("1:{}", base64(&sha1(&buf))))
}

/// The Community ID of a row, oriented on the flow's remote address.
pub(crate) fn of_row(row: &NetRow<'_>, remote: IpAddr, proto: Protocol) -> Option<String> {
    let (own_ip, own_port, peer_port) = if row.remote_ip == Some(remote) {
        (row.local_ip?, row.local_port?, row.remote_port?)
    } else {
        (row.remote_ip?, row.remote_port?, row.local_port?)
    };
    community_id(proto, own_ip, own_port, remote, peer_port)
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for chunk in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in chunk.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= n {
                out.push(char::from(A[((v >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn sha1_of_abc() {
        let hex: String = sha1(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn matches_the_spec_baseline_in_both_directions() {
        // Vectors from corelight/community-id-spec baseline_deflt.json.
        let cases = [
            (
                Protocol::Tcp,
                "128.232.110.120",
                34855,
                "66.35.250.204",
                80,
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                Protocol::Udp,
                "192.168.1.52",
                54585,
                "8.8.8.8",
                53,
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            ),
            (
                Protocol::Tcp,
                "2001:470:e5bf:dead:4957:2174:e82c:4887",
                63943,
                "2607:f8b0:400c:c03::1a",
                25,
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
            ),
        ];
        for (p, a, ap, b, bp, want) in cases {
            assert_eq!(community_id(p, ip(a), ap, ip(b), bp).as_deref(), Some(want));
            assert_eq!(community_id(p, ip(b), bp, ip(a), ap).as_deref(), Some(want));
        }
        assert_eq!(
            community_id(Protocol::Icmp, ip("1.1.1.1"), 0, ip("2.2.2.2"), 0),
            None
        );
    }
}
