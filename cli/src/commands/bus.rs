//! `patchpanda bus messages`: what the local bus holds on a topic.

use clap::{Args, Subcommand};

use crate::context::Ctx;
use crate::failure::{Failure, Outcome};
use crate::output::{self, Table};

#[derive(Debug, Subcommand)]
pub enum BusCommand {
    /// Messages retained on a topic of the local bus (7 days), oldest first.
    Messages(MessagesArgs),
}

#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Topic id, e.g. patchpanda-github-events.
    pub topic: String,
    /// One JSON object a line: id, data (base64), attributes, ordering_key, publish_time.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Ctx, cmd: BusCommand) -> Outcome {
    let BusCommand::Messages(a) = cmd;
    let backends = ctx.backends().await?;
    let Some(local) = &backends.local else {
        return Err(Failure(
            "`bus messages` reads the local bus; on gcp pull from a subscription with `gcloud pubsub subscriptions pull`".into(),
        ));
    };
    let messages = local.bus.messages(&a.topic)?;
    if a.json {
        for m in &messages {
            println!(
                "{}",
                serde_json::to_string(m).map_err(|e| Failure(e.to_string()))?
            );
        }
        return Ok(());
    }
    if messages.is_empty() {
        eprintln!("No messages on {}.", a.topic);
        return Ok(());
    }
    let mut t = Table::new(&["ID", "PUBLISHED", "BYTES", "ORDERING_KEY", "ATTRIBUTES"]);
    for m in &messages {
        let attrs: Vec<String> = m
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        t.row(vec![
            m.id.clone(),
            output::time(m.publish_time),
            m.data.len().to_string(),
            output::opt(m.ordering_key.clone()),
            attrs.join(","),
        ]);
    }
    t.print();
    Ok(())
}
