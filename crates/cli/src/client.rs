//! A small HTTP/1 client for the API (plain HTTP: the API listens on loopback).

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Where the API is and the key to use, from `LEAP0_BASE_URL` and `LEAP0_API_KEY`.
pub(crate) struct Api {
    base: String,
    key: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        let base =
            std::env::var("LEAP0_BASE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned());
        let key = std::env::var("LEAP0_API_KEY").context(
            "LEAP0_API_KEY is not set (create one with `palisade keys create --org NAME`)",
        )?;
        if !base.starts_with("http://") {
            bail!("LEAP0_BASE_URL must be an http:// URL");
        }
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The API's base URL, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<http::Request<Full<Bytes>>> {
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        Ok(http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .body(Full::new(bytes))?)
    }

    /// One call; a non-2xx answer becomes an error with the server's message.
    /// [`call`](Self::call) with a POST body, the shape of every command that makes something.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(http::Method::POST, path, Some(body)).await
    }

    pub(crate) async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let resp = self
            .client
            .request(self.request(method, path, body)?)
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if !status.is_success() {
            let msg = value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("request failed");
            bail!("{status}: {msg}");
        }
        Ok(value)
    }

    /// Follows a server-sent event stream, calling `each` with every `data:` payload.
    pub(crate) async fn follow(
        &self,
        path: &str,
        mut each: impl FnMut(Value),
    ) -> anyhow::Result<()> {
        let mut req = self.request(http::Method::GET, path, None)?;
        req.headers_mut().insert(
            "accept",
            http::HeaderValue::from_static("text/event-stream"),
        );
        let resp = self
            .client
            .request(req)
            .await
            .context("cannot reach the API")?;
        if !resp.status().is_success() {
            bail!("{}", resp.status());
        }
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Some(payload) = line.strip_prefix(b"data:")
                        && let Ok(v) = serde_json::from_slice(payload.trim_ascii())
                    {
                        each(v);
                    }
                }
            }
        }
        Ok(())
    }
}
