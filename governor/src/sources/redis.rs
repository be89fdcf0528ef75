//! Redis memory: `INFO memory` → used_memory / maxmemory (or the configured capacity when
//! maxmemory is 0).

use tokio::sync::Mutex;

use super::{ReadFuture, SignalSource, SourceError};

/// Reads one Redis endpoint's memory use as a fraction of its capacity.
pub struct RedisMemorySource {
    client: redis::Client,
    capacity_bytes: Option<u64>,
    conn: Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl RedisMemorySource {
    /// A reader for `url`; connects lazily on the first read.
    pub fn new(url: &str, capacity_bytes: Option<u64>) -> Result<Self, SourceError> {
        let client =
            redis::Client::open(url).map_err(|e| SourceError::Config(format!("Redis URL: {e}")))?;
        Ok(Self {
            client,
            capacity_bytes,
            conn: Mutex::new(None),
        })
    }

    async fn read_info(&self) -> Result<f64, SourceError> {
        let mut guard = self.conn.lock().await;
        // A connection kept from an earlier read may have died with the server: then the
        // read reconnects at once, so the error reported is the real cause ("connection
        // refused"), not the stale connection's "broken pipe".
        let reused = guard.is_some();
        for attempt in 0..2 {
            let conn = match guard.as_mut() {
                Some(conn) => conn,
                None => {
                    let conn = self
                        .client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| SourceError::Connect(e.to_string()))?;
                    guard.insert(conn)
                }
            };
            let info: Result<String, redis::RedisError> =
                redis::cmd("INFO").arg("memory").query_async(conn).await;
            match info {
                Ok(text) => return memory_fraction(&text, self.capacity_bytes),
                Err(e) => {
                    *guard = None;
                    let lost = e.is_io_error() || e.is_connection_dropped();
                    if !(lost && reused && attempt == 0) {
                        return Err(if lost {
                            SourceError::Connect(format!("connection lost: {e}"))
                        } else {
                            SourceError::Protocol(format!("INFO memory: {e}"))
                        });
                    }
                }
            }
        }
        Err(SourceError::Connect("connection lost".into()))
    }
}

impl SignalSource for RedisMemorySource {
    fn read(&self) -> ReadFuture<'_> {
        Box::pin(self.read_info())
    }
}

fn field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| {
        let (key, value) = line.trim().split_once(':')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// used_memory / capacity from an `INFO memory` reply, where capacity is `maxmemory`, or
/// `capacity_bytes` when maxmemory is 0.
pub fn memory_fraction(info: &str, capacity_bytes: Option<u64>) -> Result<f64, SourceError> {
    let used = field(info, "used_memory")
        .ok_or_else(|| SourceError::Protocol("INFO memory has no used_memory".into()))?;
    let maxmemory = field(info, "maxmemory")
        .ok_or_else(|| SourceError::Protocol("INFO memory has no maxmemory".into()))?;
    let capacity = match (maxmemory, capacity_bytes) {
        (0, Some(c)) | (c, _) if c > 0 => c,
        _ => {
            return Err(SourceError::Config(
                "maxmemory is 0 (unlimited) and no capacity_bytes is configured".into(),
            ))
        }
    };
    Ok(used as f64 / capacity as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Memory\r\nused_memory:524288\r\nused_memory_human:819.20K\r\nmaxmemory:655360\r\nmaxmemory_policy:noeviction\r\n";

    #[test]
    fn fraction_of_maxmemory() {
        assert_eq!(memory_fraction(INFO, None).unwrap(), 0.8);
        // maxmemory wins over a configured capacity.
        assert_eq!(memory_fraction(INFO, Some(1)).unwrap(), 0.8);
    }

    #[test]
    fn capacity_when_maxmemory_is_zero() {
        let info = "used_memory:500\r\nmaxmemory:0\r\n";
        assert_eq!(memory_fraction(info, Some(1000)).unwrap(), 0.5);
        assert!(matches!(
            memory_fraction(info, None),
            Err(SourceError::Config(_))
        ));
        assert!(matches!(
            memory_fraction("maxmemory:0\r\n", Some(1)),
            Err(SourceError::Protocol(_))
        ));
    }
}
