//! Any input to the config loader gives a config or errors, never a panic; a valid config
//! always compiles into a runtime.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = gatehouse::config::parse(text) {
            gatehouse::runtime::Runtime::compile(cfg, None)
                .expect("a validated config compiles");
        }
    }
});
