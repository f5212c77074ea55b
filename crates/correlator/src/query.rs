//! Ready-made hunting queries for the answer. Every string literal goes through the KQL
//! printer's quoting, so no value from telemetry or a detection can change a query's shape.

use culprit_kql::printer::quote_string;
use culprit_model::correlation::{HuntingQueries, ProcessAnswer};
use culprit_model::{Detection, Duration, Timestamp};

fn datetime(t: Timestamp) -> String {
    format!("datetime({})", t.to_kusto_string())
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote_string(s)).collect();
    format!("({})", quoted.join(", "))
}

/// Installed system binaries are everywhere: their hashes and names hunt nothing.
fn distinctive(p: &ProcessAnswer) -> bool {
    let path = p.folder_path.to_ascii_lowercase();
    !(path.contains("\\windows\\") || path.contains("\\program files"))
}

fn process_filter(p: &ProcessAnswer) -> String {
    let mut s = format!(
        "InitiatingProcessId == {} or ProcessId == {}",
        p.process_id, p.process_id
    );
    if let Some(c) = p.process_creation_time {
        s = format!(
            "(InitiatingProcessId == {pid} and InitiatingProcessCreationTime == {c}) or (ProcessId == {pid} and ProcessCreationTime == {c})",
            pid = p.process_id,
            c = datetime(c)
        );
    }
    s
}

pub(crate) fn build(
    det: &Detection,
    device_id: &str,
    tolerance: Duration,
    probable: Option<&ProcessAnswer>,
    root: Option<&ProcessAnswer>,
) -> HuntingQueries {
    let mut ips: Vec<String> = det.flows.iter().map(|f| f.remote_ip.to_string()).collect();
    ips.sort();
    ips.dedup();
    let mut device_filters = Vec::new();
    if !ips.is_empty() {
        let l = list(&ips);
        device_filters.push(format!("RemoteIP in {l} or LocalIP in {l}"));
    }
    for p in [probable, root].into_iter().flatten() {
        device_filters.push(process_filter(p));
    }
    let mut device = format!(
        "union DeviceNetworkEvents, DeviceProcessEvents, DeviceEvents\n| where Timestamp between ({} .. {})\n| where DeviceId == {}",
        datetime(det.window.start - tolerance - Duration::from_minutes(10)),
        datetime(det.window.end + tolerance + Duration::from_minutes(10)),
        quote_string(device_id)
    );
    device_filters.dedup();
    if !device_filters.is_empty() {
        device.push_str(&format!("\n| where {}", device_filters.join(" or ")));
    }
    device.push_str(
        "\n| project Timestamp, DeviceName, ActionType, FileName, ProcessId, ProcessCommandLine, InitiatingProcessFileName, InitiatingProcessId, InitiatingProcessCommandLine, LocalIP, LocalPort, RemoteIP, RemotePort, RemoteUrl\n| order by Timestamp asc",
    );

    let mut hashes: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for p in [probable, root]
        .into_iter()
        .flatten()
        .filter(|p| distinctive(p))
    {
        hashes.extend([p.sha256.clone()].into_iter().filter(|h| !h.is_empty()));
        if !p.file_name.is_empty() {
            names.push(p.file_name.clone());
        }
    }
    hashes.dedup();
    names.dedup();
    let mut any = Vec::new();
    if !hashes.is_empty() {
        let l = list(&hashes);
        any.push(format!("SHA256 in {l} or InitiatingProcessSHA256 in {l}"));
    }
    if !ips.is_empty() {
        any.push(format!("RemoteIP in {}", list(&ips)));
    }
    for n in &names {
        let q = quote_string(n);
        any.push(format!(
            "ProcessCommandLine has {q} or InitiatingProcessCommandLine has {q}"
        ));
    }
    if any.is_empty() {
        // Nothing distinctive: who else talked to this host around the detection.
        let host = det.host.ip.map(|i| i.to_string()).unwrap_or_default();
        any.push(format!("RemoteIP == {}", quote_string(&host)));
    }
    let enterprise = format!(
        "union DeviceProcessEvents, DeviceNetworkEvents, DeviceEvents, DeviceFileEvents\n| where Timestamp > ago(30d)\n| where {}\n| summarize Events = count(), FirstSeen = min(Timestamp), LastSeen = max(Timestamp) by DeviceId, DeviceName\n| order by FirstSeen asc",
        any.join(" or ")
    );
    HuntingQueries { device, enterprise }
}
