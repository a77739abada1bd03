//! Any input to the config loader gives a config or errors, never a panic; a valid config
//! always compiles into a runtime.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cfg) = gatehouse::config::parse(text) {
            // Compiling may still fail only on what validation cannot see: the GeoIP
            // database file and the size of a bot pattern set.
            if let Err(errs) = gatehouse::runtime::Runtime::compile(cfg, None) {
                for e in &errs.0 {
                    assert!(
                        e.path == "geoip.database"
                            || e.path.ends_with(".geofence")
                            || e.path.contains(".bot_detector."),
                        "a validated config failed to compile: {e}"
                    );
                }
            }
        }
    }
});
