//! The sentence-pair loader never panics, and what it accepts has two non-empty, tab-free sides.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pairs) =
            mechinterp::translation::parse_tsv(text, std::path::Path::new("fuzz.tsv"))
        {
            for p in pairs {
                assert!(!p.src.is_empty() && !p.tgt.is_empty());
                assert!(!p.src.contains('\t') && !p.tgt.contains('\t'));
            }
        }
    }
});
