//! Hook-name parsing never panics, round-trips what it accepts, and always suggests something.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mechinterp::hooks::{act_name, HookPoint};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        match s.parse::<HookPoint>() {
            Ok(p) => assert_eq!(p.name().parse::<HookPoint>().ok(), Some(p)),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let _ = HookPoint::parse_for(s, 18);
        let _ = act_name(s, 3);
    }
});
