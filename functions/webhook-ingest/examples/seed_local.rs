//! Benchmark setup: seeds a local PATCHPANDA_HOME with a webhook secret (as
//! the rotation worker would) and writes a signed ~8 KiB push payload.
//! Usage: seed_local HOME SECRET OUT_DIR

use std::path::PathBuf;

use patchpanda_shared::backends::Backends;
use patchpanda_shared::config::{Config, Env};
use patchpanda_shared::github::signature;
use patchpanda_shared::names;
use patchpanda_shared::secrets::SecretUpdate;

const TARGET_SIZE: usize = 8 * 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [home, secret, out] = args.as_slice() else {
        eprintln!("usage: seed_local HOME SECRET OUT_DIR");
        std::process::exit(2);
    };
    let env = Env::from_pairs([
        ("PATCHPANDA_BACKEND", "local"),
        ("PATCHPANDA_HOME", home.as_str()),
    ]);
    let config = Config::from_env(&env, names::PRINCIPAL_ROTATION_WORKER)?;
    let b = Backends::open(&config).await?;
    let id = config.secret_id(names::WEBHOOK_SECRET);
    match b.secrets.create_secret(&id).await {
        Ok(_) | Err(patchpanda_shared::Error::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let v = b.secrets.add_version(&id, secret.as_bytes()).await?;
    b.secrets
        .update_secret(
            &id,
            SecretUpdate {
                aliases: Some([(names::ALIAS_CURRENT.to_string(), v.number)].into()),
                annotations: None,
            },
            None,
        )
        .await?;

    let payload = push_payload();
    let out = PathBuf::from(out);
    std::fs::write(out.join("payload.json"), &payload)?;
    std::fs::write(
        out.join("signature.txt"),
        signature::sign(secret.as_bytes(), &payload),
    )?;
    println!(
        "seeded {id} v{} in {home}; payload {} bytes",
        v.number,
        payload.len()
    );
    Ok(())
}

/// A push with enough commits to reach ~8 KiB, in GitHub's shape.
fn push_payload() -> Vec<u8> {
    let commit = |i: usize| {
        serde_json::json!({
            "id": format!("{:040x}", i * 7919),
            "tree_id": format!("{:040x}", i * 104729),
            "distinct": true,
            "message": format!("Change number {i}: update the README and the docs"),
            "timestamp": "2026-05-15T15:20:30-05:00",
            "url": format!("https://github.com/octo-org/hello-world/commit/{:040x}", i * 7919),
            "author": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com", "username": "Codertocat"},
            "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
            "added": [], "removed": [], "modified": ["README.md", "docs/index.md"]
        })
    };
    let mut commits = Vec::new();
    loop {
        commits.push(commit(commits.len() + 1));
        let v = serde_json::json!({
            "ref": "refs/heads/main",
            "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
            "repository": {"id": 186853002, "name": "hello-world", "full_name": "octo-org/hello-world", "private": false,
                "owner": {"login": "octo-org", "id": 6811672, "type": "Organization"}, "default_branch": "main"},
            "pusher": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
            "sender": {"login": "Codertocat", "id": 21031067, "type": "User"},
            "installation": {"id": 2311213},
            "created": false, "deleted": false, "forced": false,
            "commits": commits,
        });
        let bytes = serde_json::to_vec_pretty(&v).unwrap_or_default();
        if bytes.len() >= TARGET_SIZE - 700 {
            return bytes;
        }
    }
}
