//! A real `redis-server` for one test, from the one harness (`huntgate-harness`).

pub use huntgate_harness::redis::RedisServer;

/// The e2e tests' Redis: 64 MB, `noeviction`.
pub struct Redis;

impl Redis {
    /// Starts one on a free port.
    #[allow(clippy::new_ret_no_self)]
    pub fn start() -> RedisServer {
        RedisServer::start("64mb")
    }

    /// Starts one on `port` (e.g. again where a stopped one listened), empty.
    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::start_on(port, "64mb")
    }
}
