#![no_main]
//! Suricata EVE lines: any bytes must give a result per line, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = culprit_ingest::suricata::parse_lines(data, "fuzz");
});
