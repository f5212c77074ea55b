#![no_main]
//! Vectra syslog: TCP framing, headers, CEF and JSON bodies; never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((used, msg))) = culprit_ingest::vectra_syslog::next_frame(rest) {
        let _ = culprit_ingest::vectra_syslog::parse_message(msg, "fuzz");
        if used == 0 {
            break;
        }
        rest = &rest[used..];
    }
    let _ = culprit_ingest::vectra_syslog::parse_lines(data, "fuzz");
});
