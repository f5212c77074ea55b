#![no_main]
//! Zeek notice/conn logs (TSV or JSON lines): never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = culprit_ingest::zeek::parse_notice(data, "fuzz");
    let conns: Vec<_> = culprit_ingest::zeek::parse_conn(data)
        .into_iter()
        .filter_map(|(_, r)| r.ok())
        .collect();
    for c in conns {
        let _ = c.into_detection("fuzz", "conn");
    }
});
