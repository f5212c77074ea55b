//! Grouping sessions into flows by (remote ip, remote port, protocol), keeping first-seen order.

use std::collections::HashMap;
use std::net::IpAddr;

use culprit_model::detection::Protocol;
use culprit_model::{Flow, Session};

type FlowKey = (IpAddr, Option<u16>, &'static str);

/// Below this many flows a linear scan beats hashing; above it an index keeps a detection
/// with thousands of destinations linear.
const INDEX_FROM: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct FlowSet {
    flows: Vec<Flow>,
    index: HashMap<FlowKey, usize>,
}

fn key_of(f: &Flow) -> FlowKey {
    (f.remote_ip, f.remote_port, f.protocol.as_str())
}

impl FlowSet {
    /// Adds one session; `domain` fills the flow's domain if it has none yet.
    pub(crate) fn add(
        &mut self,
        remote_ip: IpAddr,
        remote_port: Option<u16>,
        protocol: Protocol,
        domain: Option<String>,
        session: Session,
    ) {
        let key = (remote_ip, remote_port, protocol.as_str());
        let found = if self.flows.len() < INDEX_FROM {
            self.flows.iter().position(|f| key_of(f) == key)
        } else {
            if self.index.is_empty() {
                self.index = self
                    .flows
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (key_of(f), i))
                    .collect();
            }
            self.index.get(&key).copied()
        };
        let i = match found {
            Some(i) => i,
            None => {
                self.flows.push(Flow {
                    remote_ip,
                    remote_port,
                    protocol,
                    domain: None,
                    sessions: Vec::new(),
                });
                let i = self.flows.len() - 1;
                if !self.index.is_empty() {
                    self.index.insert(key, i);
                }
                i
            }
        };
        if let Some(flow) = self.flows.get_mut(i) {
            if flow.domain.is_none() {
                flow.domain = domain;
            }
            flow.sessions.push(session);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.flows.len()
    }

    pub(crate) fn into_flows(self) -> Vec<Flow> {
        self.flows
    }
}

/// Addresses of "our" side: private, loopback, link-local, unique-local. Used to tell an
/// inbound attack (public initiator, internal responder) from outbound traffic.
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_private() || a.is_loopback() || a.is_link_local(),
        IpAddr::V6(a) => a.is_loopback() || a.is_unique_local() || a.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_model::Timestamp;

    fn session(t: i64) -> Session {
        Session {
            first: Timestamp::from_unix_seconds(t),
            last: Timestamp::from_unix_seconds(t),
            local_port: None,
            bytes_sent: None,
            bytes_received: None,
            community_id: None,
        }
    }

    #[test]
    fn groups_by_destination_across_the_index_threshold() {
        let mut set = FlowSet::default();
        for round in 0..2 {
            for i in 0..40u8 {
                let ip = IpAddr::from([10, 0, 0, i]);
                set.add(
                    ip,
                    Some(443),
                    Protocol::Tcp,
                    None,
                    session(i64::from(round)),
                );
                set.add(
                    ip,
                    Some(443),
                    Protocol::Udp,
                    None,
                    session(i64::from(round)),
                );
            }
        }
        assert_eq!(set.len(), 80);
        let flows = set.into_flows();
        assert!(flows.iter().all(|f| f.sessions.len() == 2));
        assert_eq!(flows[1].protocol, Protocol::Udp);
    }
}
