//! The benchmark's baseline: a bare hyper server that only reads the body
//! and checks `X-Hub-Signature-256` (no parsing, no dedupe, no publish).
//! `BARE_PORT` (default 8090) and `BARE_SECRET` (required).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use patchpanda_shared::github::signature;

const LIMIT: usize = 25 * 1024 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("BARE_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8090);
    let Ok(secret) = std::env::var("BARE_SECRET") else {
        eprintln!("bare_hmac: BARE_SECRET is required");
        std::process::exit(2);
    };
    let secret: Arc<[u8]> = secret.into_bytes().into();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let secret = secret.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let secret = secret.clone();
                async move { Ok::<_, Infallible>(handle(req, &secret).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(req: Request<hyper::body::Incoming>, secret: &[u8]) -> Response<Full<Bytes>> {
    let sig = req
        .headers()
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let status = match Limited::new(req.into_body(), LIMIT).collect().await {
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Ok(body) => match sig {
            Some(s) if signature::verify(secret, &body.to_bytes(), &s) => StatusCode::ACCEPTED,
            _ => StatusCode::UNAUTHORIZED,
        },
    };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}
