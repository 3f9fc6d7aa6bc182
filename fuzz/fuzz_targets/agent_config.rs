//! Agent and server configuration parsing: arbitrary TOML never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ferrid_agent::config::AgentConfig::parse(text);
        let _ = ferrid_server::ServerConfig::parse(text);
    }
});
