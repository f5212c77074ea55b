//! Lineage: who started a process (DeviceProcessEvents and `InitiatingProcessParent*`), who
//! injected code into it (`CreateRemoteThreadApiCall`), where the chain starts, and what the
//! device started during the window.

use std::collections::HashSet;

use crate::fx::FxSet;
use std::net::IpAddr;

use culprit_model::correlation::{ActivityEntry, TreeNode};
use culprit_model::{Duration, Timestamp};

use crate::view::{DeviceView, PKey};

/// Folders any user can write to: binaries there were put there, not installed.
const USER_WRITABLE: [&str; 9] = [
    "\\users\\",
    "\\downloads\\",
    "\\appdata\\",
    "\\temp\\",
    "\\programdata\\",
    "\\perflogs\\",
    "$recycle.bin",
    "\\windows\\tasks\\",
    "/tmp/",
];

/// System binaries that run code they fetch or are handed (proxy execution).
const PROXY_EXECUTION: [&str; 16] = [
    "regsvr32.exe",
    "rundll32.exe",
    "mshta.exe",
    "wscript.exe",
    "cscript.exe",
    "msiexec.exe",
    "certutil.exe",
    "bitsadmin.exe",
    "installutil.exe",
    "regasm.exe",
    "regsvcs.exe",
    "msbuild.exe",
    "cmstp.exe",
    "odbcconf.exe",
    "forfiles.exe",
    "msxsl.exe",
];

pub(crate) fn user_writable(path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    USER_WRITABLE.iter().any(|w| p.contains(w))
}

pub(crate) struct Lineage<'v, 'a> {
    view: &'v DeviceView<'a>,
    /// (victim, injector, when)
    injections: Vec<(PKey, PKey, Timestamp)>,
    /// Processes with a row to one of the detection's addresses.
    reached: FxSet<PKey>,
}

impl<'v, 'a> Lineage<'v, 'a> {
    pub fn new(view: &'v DeviceView<'a>, remote_ips: &[IpAddr]) -> Self {
        let mut injections = Vec::new();
        for e in view
            .events
            .iter()
            .filter(|e| e.action_type == "CreateRemoteThreadApiCall")
        {
            let Some(inj_pid) = e.initiating.process_id else {
                continue;
            };
            let injector = (inj_pid, e.initiating.creation_time);
            let Some(vpid) = e.target.process_id else {
                continue;
            };
            let victim = view
                .find(
                    vpid,
                    &e.target.file_name,
                    e.target.creation_time,
                    Some(e.timestamp),
                )
                .unwrap_or((vpid, e.target.creation_time));
            if victim != injector {
                injections.push((victim, injector, e.timestamp));
            }
        }
        let reached = view
            .net
            .iter()
            .filter(|r| {
                [r.remote_ip, r.local_ip]
                    .iter()
                    .flatten()
                    .any(|ip| remote_ips.contains(ip))
            })
            .map(|r| r.key)
            .collect();
        Lineage {
            view,
            injections,
            reached,
        }
    }

    /// The process that injected code into `k` no later than `by`.
    pub fn injector(&self, k: &PKey, by: Timestamp) -> Option<(PKey, Timestamp)> {
        self.injections
            .iter()
            .filter(|(v, _, t)| v == k && *t <= by)
            .max_by_key(|(_, _, t)| *t)
            .map(|(_, i, t)| (*i, *t))
    }

    /// Processes `k` injected code into.
    pub fn injected_by(&self, k: &PKey) -> Vec<(PKey, Timestamp)> {
        self.injections
            .iter()
            .filter(|(_, i, _)| i == k)
            .map(|(v, _, t)| (*v, *t))
            .collect()
    }

    pub fn parent(&self, k: &PKey) -> Option<PKey> {
        let info = self.view.info(k)?;
        let pid = info.parent_id?;
        let found = self
            .view
            .find(pid, &info.parent_file_name, info.parent_creation_time, k.1);
        found.or_else(|| info.parent_creation_time.map(|c| (pid, Some(c))))
    }

    /// Part of the attack rather than the ordinary launcher: run from a user-writable
    /// folder, a proxy-execution binary, or itself in touch with the detection's peers.
    fn suspicious(&self, k: &PKey) -> bool {
        if self.reached.contains(k) {
            return true;
        }
        self.view.info(k).is_some_and(|p| {
            user_writable(&p.folder_path)
                || PROXY_EXECUTION
                    .iter()
                    .any(|x| p.file_name.eq_ignore_ascii_case(x))
        })
    }

    /// Where the chain that led to `k` acting at `at` starts: through code injection, then up
    /// the parents while they are part of the attack.
    pub fn root_cause(&self, k: PKey, at: Timestamp) -> PKey {
        let mut cur = k;
        let mut at = at;
        let mut seen = HashSet::new();
        while seen.insert(cur) && seen.len() < 16 {
            if let Some((inj, t)) = self.injector(&cur, at) {
                cur = inj;
                at = t;
                continue;
            }
            match self.parent(&cur) {
                Some(p) if self.suspicious(&p) => cur = p,
                _ => break,
            }
        }
        cur
    }

    fn node(&self, k: &PKey, depth: u32, relation: &str) -> TreeNode {
        let info = self.view.info(k);
        TreeNode {
            depth,
            file_name: info.map(|p| p.file_name.clone()).unwrap_or_default(),
            process_id: Some(k.0),
            process_creation_time: k.1,
            command_line: info.map(|p| p.command_line.clone()).unwrap_or_default(),
            relation: relation.to_owned(),
        }
    }

    /// Ancestors (oldest first), the process, code it injected or that injected it, and
    /// its children.
    pub fn tree(&self, k: PKey) -> Vec<TreeNode> {
        let mut chain = vec![k];
        while chain.len() < 8 {
            match chain.last().and_then(|c| self.parent(c)) {
                Some(p) if !chain.contains(&p) => chain.push(p),
                _ => break,
            }
        }
        chain.reverse();
        let mut out = Vec::new();
        let last = chain.len().saturating_sub(1);
        for (i, c) in chain.iter().enumerate() {
            let rel = if i == last { "probable" } else { "parent" };
            out.push(self.node(c, i as u32, rel));
        }
        let depth = last as u32 + 1;
        if let Some((inj, _)) = self.injector(&k, Timestamp(i64::MAX)) {
            out.push(self.node(&inj, depth, "injector"));
        }
        for (v, _) in self.injected_by(&k) {
            out.push(self.node(&v, depth, "injected"));
        }
        for c in self.view.created.iter().filter(|c| {
            c.initiating.process_id == Some(k.0)
                && (k.1.is_none()
                    || c.initiating.creation_time.is_none()
                    || c.initiating.creation_time == k.1)
        }) {
            if let Some(pid) = c.process.process_id {
                out.push(self.node(&(pid, c.process.creation_time), depth, "child"));
            }
        }
        out
    }
}

/// Every process started on the device in the window (± tolerance), in time order.
pub(crate) fn window_activity(
    view: &DeviceView<'_>,
    start: Timestamp,
    end: Timestamp,
    tol: Duration,
) -> Vec<ActivityEntry> {
    view.created
        .iter()
        .filter(|c| c.timestamp >= start - tol && c.timestamp <= end + tol)
        .map(|c| ActivityEntry {
            timestamp: c.timestamp,
            file_name: c.process.file_name.clone(),
            process_id: c.process.process_id,
            command_line: c.process.command_line.clone(),
            parent_file_name: c.initiating.file_name.clone(),
            parent_id: c.initiating.process_id,
        })
        .collect()
}
