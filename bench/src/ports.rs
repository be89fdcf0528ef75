//! Free loopback ports.

use std::net::TcpListener;

use anyhow::Result;

/// A loopback port that was free a moment ago (the OS picks it).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
