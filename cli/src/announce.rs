//! An operator's command announcing the secret reads it is about to make
//! (contract 8: an `announced` notice on the rotation events), so the
//! alerter records a listed operator's reads at P3 instead of paging each
//! one. A failure to announce stops nothing (a backup may be needed while
//! the bus is down); the reads then page, as any unannounced read does.

use chrono::Utc;
use patchpanda_shared::names::TOPIC_ROTATION_EVENTS;
use patchpanda_shared::notice::RotationNotice;

use crate::context::Ctx;

/// Announces `command`'s reads of each of `logical` for `lasting`;
/// `why(logical)` is the reason the notice gives.
pub(crate) async fn announce_reads(
    ctx: &Ctx,
    command: &str,
    logical: &[String],
    lasting: chrono::Duration,
    why: impl Fn(&str) -> String,
) {
    let until = Utc::now() + lasting;
    let bus = match ctx.backends().await {
        Ok(b) => b.bus.clone(),
        Err(e) => {
            eprintln!(
                "warning: {command} not announced ({}); its reads will page",
                e.0
            );
            return;
        }
    };
    for name in logical {
        let n = RotationNotice::announced(name, &ctx.config.principal, until, why(name));
        if let Err(e) = bus.publish(TOPIC_ROTATION_EVENTS, n.to_message()).await {
            eprintln!("warning: {command} of {name} not announced ({e}); its reads will page");
        }
    }
    // The notices and the reads' audit entries reach the alerter on
    // different subscriptions: give the notices a head start.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
}
