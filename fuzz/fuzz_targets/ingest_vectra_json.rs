#![no_main]
//! Vectra API JSON: any bytes must give a result, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = culprit_ingest::vectra::parse_json(data, "fuzz");
});
