//! Community ID v1 (seed 0) for TCP and UDP, computed from an MDE row so it can be compared
//! with the one the NDR reports.

use std::net::IpAddr;

use culprit_model::detection::Protocol;

use crate::view::NetRow;

/// `1:<base64(sha1(...))>` (seed 0) of a TCP or UDP connection between two endpoints.
pub fn community_id(
    proto: Protocol,
    a: IpAddr,
    a_port: u16,
    b: IpAddr,
    b_port: u16,
) -> Option<String> {
    let number = match proto {
        Protocol::Tcp => culprit_model::community_id::TCP,
        Protocol::Udp => culprit_model::community_id::UDP,
        _ => return None,
    };
    culprit_model::community_id::community_id(a, b, Some(a_port), Some(b_port), number, 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
