//! Community ID for normalised detections: the hash itself lives in the model
//! ([`culprit_model::community_id`]); this fills it in for sessions that know their ports.

pub use culprit_model::community_id::{community_id, community_id_hex, protocol_number};

use culprit_model::Detection;
use culprit_model::community_id::{TCP, UDP};
use culprit_model::detection::{Direction, Protocol};

/// Computes the Community ID of every session that knows its local port and has none from
/// the source, from the detection's host address and the flow's remote end. ICMP sessions are
/// left alone: their "ports" are message types, which the normalised session does not keep.
pub fn fill_sessions(det: &mut Detection, seed: u16) {
    let Some(host) = det.host.ip else { return };
    for flow in &mut det.flows {
        let proto = match flow.protocol {
            Protocol::Tcp => TCP,
            Protocol::Udp => UDP,
            Protocol::Icmp | Protocol::Other => continue,
        };
        for s in flow
            .sessions
            .iter_mut()
            .filter(|s| s.community_id.is_none())
        {
            let Some(local) = s.local_port else { continue };
            // The initiator goes first; the hash does not depend on it for TCP/UDP, but
            // keeping the real orientation costs nothing.
            s.community_id = match det.direction {
                Direction::Outbound => community_id(
                    host,
                    flow.remote_ip,
                    Some(local),
                    flow.remote_port,
                    proto,
                    seed,
                ),
                Direction::Inbound => community_id(
                    flow.remote_ip,
                    host,
                    flow.remote_port,
                    Some(local),
                    proto,
                    seed,
                ),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn baseline(file: &str) -> Vec<serde_json::Value> {
        let p = format!(
            "{}/tests/data/samples/community-id/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    fn check_baseline(file: &str, seed: u16, hex: bool) {
        let rows = baseline(file);
        assert_eq!(rows.len(), 23, "{file}");
        for r in rows {
            let port = |k: &str| r[k].as_u64().map(|p| u16::try_from(p).unwrap());
            let f = if hex { community_id_hex } else { community_id };
            let got = f(
                ip(r["saddr"].as_str().unwrap()),
                ip(r["daddr"].as_str().unwrap()),
                port("sport"),
                port("dport"),
                u8::try_from(r["proto"].as_u64().unwrap()).unwrap(),
                seed,
            );
            assert_eq!(got.as_deref(), r["communityid"].as_str(), "{file}: {r}");
        }
    }

    #[test]
    fn spec_baselines_all_rows() {
        check_baseline("baseline_deflt.json", 0, false);
        check_baseline("baseline_seed1.json", 1, false);
        check_baseline("baseline_nob64.json", 0, true);
    }

    /// pycommunityid's extra vectors (ndr-formats.md §4.3), default / hex / seed 1.
    #[test]
    fn pycommunityid_vectors() {
        // (src, dst, sport, dport, proto, default, hex, seed 1)
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<u16>,
            Option<u16>,
            u8,
            &'a str,
            &'a str,
            &'a str,
        );
        let cases: &[Case<'_>] = &[
            (
                "10.0.0.1",
                "10.0.0.2",
                Some(10),
                Some(11569),
                6,
                "1:SXBGMX1lBOwhhoDrZynfROxnhnM=",
                "1:497046317d6504ec218680eb6729df44ec678673",
                "1:HmBRGR+fUyXF4t8WEtal7Y0gEAo=",
            ),
            (
                "192.168.0.89",
                "192.168.0.1",
                Some(20),
                Some(0),
                1,
                "1:3o2RFccXzUgjl7zDpqmY7yJi8rI=",
                "1:de8d9115c717cd482397bcc3a6a998ef2262f2b2",
                "1:lCXHHxavE1Vq3oX9NH5ladQg02o=",
            ),
            (
                "192.168.0.89",
                "192.168.0.1",
                Some(20),
                Some(1),
                1,
                "1:tz/fHIDUHs19NkixVVoOZywde+I=",
                "1:b73fdf1c80d41ecd7d3648b1555a0e672c1d7be2",
                "1:Ie3wmFyxiEyikbsbcO03d2nh+PM=",
            ),
            (
                "192.168.0.1",
                "192.168.0.89",
                Some(0),
                Some(20),
                1,
                "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=",
                "1:5f4b27617a60c22bfd4d9b6a83ae2c833527e839",
                "1:03g6IloqVBdcZlPyX8r0hgoE7kA=",
            ),
            (
                "3ffe:507:0:1:260:97ff:fe07:69ea",
                "3ffe:507:0:1:200:86ff:fe05:80da",
                Some(3),
                Some(0),
                58,
                "1:NdobDX8PQNJbAyfkWxhtL2Pqp5w=",
                "1:35da1b0d7f0f40d25b0327e45b186d2f63eaa79c",
                "1:OlOWx9psIbBFi7lOCw/4MhlKR9M=",
            ),
            (
                "3ffe:507:0:1:200:86ff:fe05:80da",
                "3ffe:507:0:1:260:97ff:fe07:69ea",
                Some(3),
                Some(0),
                58,
                "1:/OGBt9BN1ofenrmSPWYicpij2Vc=",
                "1:fce181b7d04dd687de9eb9923d66227298a3d957",
                "1:Ij4ZxnC87/MXzhOjvH2vHu7LRmE=",
            ),
            (
                "192.168.170.8",
                "192.168.170.56",
                Some(7),
                Some(80),
                132,
                "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=",
                "1:8d0802c5b92efa9346c3c58f6c473f4d2fee4e94",
                "1:Y1/0jQg6e+I3ZwZZ9LP65DNbTXU=",
            ),
            (
                "10.1.24.4",
                "10.1.12.1",
                None,
                None,
                46,
                "1:/nQI4Rh/TtY3mf0R2gJFBkVlgS4=",
                "1:fe7408e1187f4ed63799fd11da0245064565812e",
                "1:BK3BVW3U2eemuwVQVN3zd/GULno=",
            ),
            (
                "10.0.0.1",
                "10.0.0.2",
                Some(10),
                Some(20),
                6,
                "1:9j2Dzwrw7T9E+IZi4b4IVT66HBI=",
                "",
                "",
            ),
            (
                "1.2.3.4",
                "5.6.7.8",
                Some(1122),
                Some(3344),
                6,
                "1:wCb3OG7yAFWelaUydu0D+125CLM=",
                "1:c026f7386ef200559e95a53276ed03fb5db908b3",
                "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=",
            ),
            (
                "5.6.7.8",
                "1.2.3.4",
                Some(3344),
                Some(1122),
                17,
                "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
                "1:d0cbbd227431eb3e1988264cffb1d78b658c84e8",
                "1:OShq+iKDAMVouh/4bMxB9Sz4amw=",
            ),
            (
                "fe80:0001:0203:0405:0607:0809:0A0B:0C0D",
                "fe80:1011:1213:1415:1617:1819:1A1B:1C1D",
                Some(146),
                Some(0),
                58,
                "1:fYC8+pz24E+EhANP1EZhpX0Dw10=",
                "1:7d80bcfa9cf6e04f8484034fd44661a57d03c35d",
                "1:Cv4IKJe56BNkF0MBW2YxQ3Nwc3s=",
            ),
        ];
        for &(s, d, sp, dp, proto, b64, hex, seed1) in cases {
            let (s, d) = (ip(s), ip(d));
            assert_eq!(
                community_id(s, d, sp, dp, proto, 0).as_deref(),
                Some(b64),
                "{s} {d}"
            );
            if !hex.is_empty() {
                assert_eq!(
                    community_id_hex(s, d, sp, dp, proto, 0).as_deref(),
                    Some(hex)
                );
                assert_eq!(community_id(s, d, sp, dp, proto, 1).as_deref(), Some(seed1));
            }
        }
    }

    #[test]
    fn fills_sessions_with_a_local_port_only() {
        let eve = std::fs::read(format!(
            "{}/tests/data/scenarios/lsass_01/suricata_eve.jsonl",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut d = crate::suricata::parse_lines(&eve, "t")
            .remove(3)
            .detection
            .unwrap();
        let expected = d.flows[0].sessions[0].community_id.take();
        let mut no_port = d.clone();
        no_port.flows[0].sessions[0].local_port = None;
        fill_sessions(&mut d, 0);
        fill_sessions(&mut no_port, 0);
        assert_eq!(d.flows[0].sessions[0].community_id, expected);
        assert_eq!(no_port.flows[0].sessions[0].community_id, None);
        // Inbound orientation gives the same ID.
        d.flows[0].sessions[0].community_id = None;
        d.direction = Direction::Inbound;
        fill_sessions(&mut d, 0);
        assert_eq!(d.flows[0].sessions[0].community_id, expected);
    }

    #[test]
    fn cannot_compute_without_ports_or_across_families() {
        assert_eq!(
            community_id(ip("1.2.3.4"), ip("::1"), Some(1), Some(2), 6, 0),
            None
        );
        assert_eq!(
            community_id(ip("1.2.3.4"), ip("5.6.7.8"), None, Some(2), 6, 0),
            None
        );
        assert_eq!(protocol_number("IPv6-ICMP", true), Some(58));
        assert_eq!(protocol_number("icmp", true), Some(58));
        assert_eq!(protocol_number("ICMP", false), Some(1));
        assert_eq!(protocol_number("47", false), Some(47));
        assert_eq!(protocol_number("GRE", false), None);
    }
}
