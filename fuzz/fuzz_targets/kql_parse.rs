#![no_main]
//! KQL text: the parser never panics, and whatever parses prints back to text that parses to
//! the same tree (so no value can change a query's structure).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = culprit_kql::parse(text) {
        let printed = culprit_kql::printer::print(&q);
        match culprit_kql::parse(&printed) {
            Ok(again) => assert_eq!(again, q, "print/parse changed the query:\n{printed}"),
            Err(e) => panic!("the printed query does not parse: {e}\n{printed}"),
        }
    }
});
