//! Grouping sessions into flows by (remote ip, remote port, protocol), keeping first-seen order.

use std::collections::HashMap;
use std::net::IpAddr;

use culprit_model::detection::Protocol;
use culprit_model::{Flow, Session};

type FlowKey = (IpAddr, Option<u16>, &'static str);

#[derive(Debug, Default)]
pub(crate) struct FlowSet {
    flows: Vec<Flow>,
    index: HashMap<FlowKey, usize>,
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
        let i = *self.index.entry(key).or_insert_with(|| {
            self.flows.push(Flow {
                remote_ip,
                remote_port,
                protocol,
                domain: None,
                sessions: Vec::new(),
            });
            self.flows.len() - 1
        });
        if let Some(flow) = self.flows.get_mut(i) {
            if flow.domain.is_none() {
                flow.domain = domain;
            }
            flow.sessions.push(session);
        }
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
