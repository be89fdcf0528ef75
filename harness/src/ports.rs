//! Free TCP ports on 127.0.0.1 for listeners whose address must be known
//! before Envoy starts (and stay the same across LDS updates).

use std::collections::HashSet;
use std::net::TcpListener;
use std::process;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports are picked below Linux's ephemeral range (32768..) so that the
/// source ports of the tests' own client connections never take them
/// between picking and Envoy binding.
const LOW: u16 = 20_000;
const HIGH: u16 = 32_000;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// A port on 127.0.0.1 that was free a moment ago and that this process has
/// not handed out before.
pub fn free_port() -> u16 {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = guard.get_or_insert_with(HashSet::new);
    for _ in 0..1_000 {
        let port = candidate();
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free port found on 127.0.0.1 in {LOW}..{HIGH}");
}

/// A pseudo-random port in LOW..HIGH, different across processes and calls.
fn candidate() -> u16 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    // splitmix64 over (time, pid, sequence).
    let mut x = nanos ^ (u64::from(process::id()) << 32) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    LOW + (x % u64::from(HIGH - LOW)) as u16
}
