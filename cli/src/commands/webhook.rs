//! `patchpanda webhook sign|send`: test deliveries signed like GitHub's.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use patchpanda_shared::github::signature;
use patchpanda_shared::names;
use patchpanda_shared::secrets::VersionRef;

use super::secrets::read_value;
use crate::context::Ctx;
use crate::failure::{Failure, Outcome};

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Print `sha256=<hex>`, the X-Hub-Signature-256 of a payload.
    Sign(SignArgs),
    /// Send a delivery signed with the current webhook secret, with GitHub's headers.
    Send(SendArgs),
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// File holding the webhook secret. One trailing newline is ignored, as
    /// GitHub's settings page has none.
    #[arg(long, value_name = "FILE")]
    pub secret_file: PathBuf,
    /// The payload to sign (default: stdin), byte for byte.
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub payload_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The X-GitHub-Event, e.g. ping, push, pull_request.
    #[arg(long)]
    pub event: String,
    /// The JSON payload, sent byte for byte (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    pub payload_file: PathBuf,
    /// Where to send it (default: the local webhook-ingest).
    #[arg(long, default_value = "http://127.0.0.1:8080/webhook")]
    pub url: String,
    /// X-GitHub-Delivery (default: a fresh GUID). Reuse one to test dedupe.
    #[arg(long)]
    pub delivery: Option<String>,
}

pub async fn run(ctx: &Ctx, cmd: WebhookCommand) -> Outcome {
    match cmd {
        WebhookCommand::Sign(a) => sign(a),
        WebhookCommand::Send(a) => send(ctx, a).await,
    }
}

fn read_payload(path: &Path) -> Result<Vec<u8>, Failure> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| Failure(format!("cannot read stdin: {e}")))?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))
    }
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn sign(a: SignArgs) -> Outcome {
    let secret = read_value(&a.secret_file)?;
    let payload = read_payload(&a.payload_file)?;
    println!(
        "{}",
        signature::sign(trim_newline(secret.expose()), &payload)
    );
    Ok(())
}

/// How long `webhook send`'s announcement covers its read.
const SEND_ANNOUNCEMENT: chrono::Duration = chrono::Duration::minutes(2);

async fn send(ctx: &Ctx, a: SendArgs) -> Outcome {
    let payload = read_payload(&a.payload_file)?;
    if serde_json::from_slice::<serde_json::Value>(&payload).is_err() {
        return Err(Failure(format!(
            "{} is not JSON; GitHub sends JSON payloads",
            a.payload_file.display()
        )));
    }
    crate::announce::announce_reads(
        ctx,
        "webhook send",
        &[names::WEBHOOK_SECRET.to_string()],
        SEND_ANNOUNCEMENT,
        |name| format!("patchpanda webhook send reads the current {name} to sign a test delivery"),
    )
    .await;
    let store = &ctx.backends().await?.secrets;
    let secret = store
        .access(
            &ctx.config.secret_id(names::WEBHOOK_SECRET),
            &VersionRef::alias(names::ALIAS_CURRENT),
        )
        .await?;
    let delivery = a
        .delivery
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let response = reqwest::Client::new()
        .post(&a.url)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/patchpanda")
        .header("x-github-event", &a.event)
        .header("x-github-delivery", &delivery)
        .header("x-github-hook-id", "0")
        .header(
            "x-hub-signature-256",
            signature::sign(secret.value.expose(), &payload),
        )
        .body(payload)
        .send()
        .await
        .map_err(|e| Failure(format!("cannot reach {}: {e}", a.url)))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("{} {} (delivery {delivery})", status.as_u16(), body.trim());
    if status.is_success() {
        Ok(())
    } else {
        Err(Failure(format!("webhook-ingest answered {status}")))
    }
}
