//! `patchpanda token`: an OIDC ID token for calling a push or scheduler
//! endpoint by hand (curl -H "Authorization: Bearer $(patchpanda token ...)").

use std::time::Duration;

use clap::Args;
use patchpanda_shared::auth::local::LocalIssuer;
use patchpanda_shared::config::Backend;

use crate::context::Ctx;
use crate::failure::{Failure, Outcome};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The `aud` claim: the endpoint's URL (or the audience it was configured with).
    #[arg(long)]
    pub audience: String,
    /// Lifetime of a local token.
    #[arg(long, default_value = "1h", value_parser = humantime_duration)]
    pub ttl: Duration,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m or 1h"))?;
    if d.is_zero() || d > Duration::from_secs(24 * 3600) {
        return Err("the lifetime must be between 1s and 24h".into());
    }
    Ok(d)
}

pub async fn run(ctx: &Ctx, a: TokenArgs) -> Outcome {
    if url::Url::parse(&a.audience).is_err() && !a.audience.starts_with("//") {
        return Err(Failure(format!("--audience {:?} is not a URL", a.audience)));
    }
    let token = match &ctx.config.backend {
        Backend::Local { home } => {
            let issuer = LocalIssuer::open_or_create(home)?;
            issuer.mint(&a.audience, &ctx.config.principal, a.ttl)?
        }
        // Application Default Credentials (see crate::id_token).
        Backend::Gcp { .. } => crate::id_token::google_id_token(&a.audience).await?,
    };
    println!("{token}");
    Ok(())
}
