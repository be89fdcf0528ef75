//! A small HTTP/1.1 client over hyper (pooled keep-alive connections), for the load generator
//! and for reading Envoy's admin API.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// An answer: status, the headers the demo reads, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `x-huntgate-ticket`, if any.
    pub ticket: Option<String>,
    /// `retry-after` in seconds, if any.
    pub retry_after_s: Option<u64>,
    /// The body (the demo's bodies are small).
    pub body: Bytes,
}

/// Pooled client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Http {
    /// A client whose requests time out after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(512)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self { client, timeout }
    }

    /// Sends one request with `headers`; the whole exchange is bounded by the timeout.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Answer> {
        let mut builder = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Empty::new()).context("building request")?;
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let ticket = header("x-huntgate-ticket");
            let retry_after_s = header("retry-after").and_then(|v| v.trim().parse().ok());
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer {
                status,
                ticket,
                retry_after_s,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .with_context(|| format!("{url}: no answer within {:?}", self.timeout))?
    }

    /// GET `url`, expecting 200; the body as text.
    pub async fn get_text(&self, url: &str) -> anyhow::Result<String> {
        let answer = self.send(Method::GET, url, &[]).await?;
        anyhow::ensure!(answer.status == 200, "{url}: status {}", answer.status);
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }
}
