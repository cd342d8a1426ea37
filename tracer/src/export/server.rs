//! The `/metrics` endpoint: serves the exposition rendered at the last
//! interval, so a scrape costs a copy, not a walk of the model, and never
//! waits for the run loop.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;

use super::{Metrics, prometheus};

/// The two renderings of the latest metrics.
#[derive(Default)]
struct Rendered {
    text: Bytes,
    protobuf: Bytes,
}

/// Handle of a running endpoint; `publish` replaces what it serves.
#[derive(Clone)]
pub struct MetricsEndpoint {
    rendered: Arc<Mutex<Rendered>>,
    pub local_addr: SocketAddr,
}

impl MetricsEndpoint {
    /// Binds `addr` and serves on the current tokio runtime.
    pub async fn bind(addr: SocketAddr) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("--metrics {addr}: cannot listen there (in use, or not a local address?)")
        })?;
        let local_addr = listener.local_addr()?;
        let rendered = Arc::new(Mutex::new(Rendered::default()));
        let shared = rendered.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| respond(request, shared.clone()));
                    // A scraper that hangs up mid-response is its business.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { rendered, local_addr })
    }

    pub fn publish(&self, metrics: &Metrics) {
        let text = Bytes::from(prometheus::text(metrics));
        let protobuf = Bytes::from(prometheus::protobuf(metrics));
        let mut rendered = self.rendered.lock().expect("not poisoned");
        *rendered = Rendered { text, protobuf };
    }
}

async fn respond(
    request: Request<Incoming>,
    rendered: Arc<Mutex<Rendered>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"tracer serves /metrics\n")))
            .expect("a valid response"));
    }
    let accept = request.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let wants_protobuf = accept.contains("application/vnd.google.protobuf");
    let (body, content_type) = {
        let rendered = rendered.lock().expect("not poisoned");
        if wants_protobuf {
            (rendered.protobuf.clone(), prometheus::PROTOBUF_CONTENT_TYPE)
        } else {
            (rendered.text.clone(), prometheus::TEXT_CONTENT_TYPE)
        }
    };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .expect("a valid response"))
}
