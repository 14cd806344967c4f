//! `patchpanda dev`: the whole stack on this machine. The three functions run
//! in-process on consecutive ports over the local backend, wired like infra/
//! wires them on Google Cloud: the local bus pushes to them with OIDC tokens,
//! and a scheduler calls their task routes like Cloud Scheduler does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use clap::Args;
use patchpanda_shared::auth::local::LocalIssuer;
use patchpanda_shared::backends::Backends;
use patchpanda_shared::bus::local::{Dispatcher, LocalBus, Subscription};
use patchpanda_shared::bus::topology::{self, Function};
use patchpanda_shared::config::{Backend, Config, Env};
use patchpanda_shared::local::Home;
use patchpanda_shared::names;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};
use patchpanda_shared::runtime::server::{App, BoxError};
use patchpanda_shared::secrets::{SecretStore, SecretUpdate};
use patchpanda_shared::{Error, SecretValue};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::commands::{Failure, Outcome};
use crate::dev_emulator::EmulatorStack;
use crate::dev_identity::Identities;

#[derive(Debug, Args, Clone)]
pub struct DevArgs {
    /// webhook-ingest listens here, rotation-worker on +1, audit-alerter on +2.
    #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..=65533))]
    pub port_base: u16,
    /// Also push patchpanda-github-events to this URL (repeatable), as the
    /// App's own workers would receive them.
    #[arg(long, value_name = "URL")]
    pub push_github_events: Vec<String>,
}

/// The functions' addresses once the stack is up.
#[derive(Debug, Clone)]
pub struct Stack {
    pub home: PathBuf,
    pub ingest: SocketAddr,
    pub worker: SocketAddr,
    pub alerter: SocketAddr,
    /// Set in emulator mode (PUBSUB_EMULATOR_HOST).
    pub emulator: Option<EmulatorStack>,
    /// Who each part acts as (production's accounts with
    /// GOOGLE_CLOUD_PROJECT set).
    pub identities: Identities,
}

impl Stack {
    pub fn addr(&self, function: Function) -> SocketAddr {
        match function {
            Function::WebhookIngest => self.ingest,
            Function::RotationWorker => self.worker,
            Function::AuditAlerter => self.alerter,
        }
    }
}

pub async fn run(args: DevArgs) -> Outcome {
    let env = Env::from_process();
    let config = Config::from_env(&env, names::PRINCIPAL_OPERATOR_DEFAULT)?;
    crate::logging::init(config.debug, "info");
    let (tx, rx) = watch::channel(false);
    let stack = start(&env, &config, &args, rx).await?;
    print_banner(&stack);
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Failure(format!("cannot wait for Ctrl-C: {e}")))?;
    eprintln!("\nStopping (in-flight requests get up to 8 s)...");
    let _ = tx.send(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack_stopped(&stack).await;
    eprintln!("Stopped. State is kept in {}.", stack.home.display());
    Ok(())
}

async fn stack_stopped(stack: &Stack) {
    // Each server drains on its own; wait until their ports close.
    for _ in 0..90 {
        if tokio::net::TcpStream::connect(stack.ingest).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts everything and returns once all three functions listen. Setting
/// `shutdown` to true stops it all. Used by `patchpanda dev` and the tests.
pub async fn start(
    env: &Env,
    config: &Config,
    args: &DevArgs,
    shutdown: watch::Receiver<bool>,
) -> Result<Stack, Failure> {
    let home_path = match &config.backend {
        Backend::Local { home } => home.clone(),
        Backend::Gcp { .. } => {
            return Err(Failure(
                "`patchpanda dev` runs the local stack; unset PATCHPANDA_BACKEND=gcp".into(),
            ));
        }
    };
    let identities = Identities::from_env(env)?;
    let home = Home::open(&home_path)?;
    let home_path =
        std::fs::canonicalize(home.path()).unwrap_or_else(|_| home.path().to_path_buf());

    if args.port_base > 65533 {
        return Err(Failure(format!(
            "--port-base {} leaves no room for three ports",
            args.port_base
        )));
    }
    let ports = [args.port_base, args.port_base + 1, args.port_base + 2];
    let mut listeners = Vec::new();
    for port in ports {
        let l = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| {
            Failure(format!(
                "cannot listen on 127.0.0.1:{port}: {e}; pass --port-base to use other ports"
            ))
        })?;
        listeners.push(l);
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let mut stack = Stack {
        home: home_path.clone(),
        ingest: addrs[0],
        worker: addrs[1],
        alerter: addrs[2],
        emulator: None,
        identities: identities.clone(),
    };

    let issuer = Arc::new(LocalIssuer::open_or_create(&home_path)?);
    // The bus exists before anything publishes: seeding already writes
    // audit entries. The functions' ports are bound, so early pushes wait
    // in their backlog.
    let local_bus = match &config.pubsub_emulator {
        Some(emulator) => {
            let s = stack.clone();
            let at = move |f: Function| s.addr(f);
            stack.emulator = Some(
                crate::dev_emulator::start(
                    emulator,
                    &at,
                    &args.push_github_events,
                    &identities,
                    issuer.clone(),
                    wait(shutdown.clone()),
                )
                .await?,
            );
            None
        }
        None => {
            let bus = Arc::new(LocalBus::open(&home)?);
            subscribe(&bus, &stack, &args.push_github_events)?;
            Some(bus)
        }
    };
    seed(env, &home_path, &identities).await?;

    // The local bus's dispatcher signs its pushes as its own account.
    let extra_push_callers: &[&str] = if local_bus.is_some() {
        &[names::PRINCIPAL_PUSH]
    } else {
        &[]
    };
    let fenv = |function: Function| {
        let mut e = env.clone();
        e.set("PATCHPANDA_BACKEND", "local")
            .set("PATCHPANDA_HOME", home_path.display().to_string())
            .set("PORT", stack.addr(function).port().to_string());
        identities.function_env(function, &mut e, &config.principal, extra_push_callers);
        e
    };
    fn started(name: &'static str) -> impl Fn(BoxError) -> Failure {
        move |e| Failure(format!("{name} failed to start: {e}"))
    }
    let apps: Vec<(&str, App)> = vec![
        ("webhook-ingest", {
            let e = fenv(Function::WebhookIngest);
            webhook_ingest::app(fconfig(&e, &identities.webhook_ingest)?, e)
                .await
                .map_err(started("webhook-ingest"))?
        }),
        ("rotation-worker", {
            let e = fenv(Function::RotationWorker);
            rotation_worker::app(fconfig(&e, &identities.rotation_worker)?, e)
                .await
                .map_err(started("rotation-worker"))?
        }),
        ("audit-alerter", {
            let e = fenv(Function::AuditAlerter);
            audit_alerter::app(fconfig(&e, &identities.audit_alerter)?, e)
                .await
                .map_err(started("audit-alerter"))?
        }),
    ];
    for ((name, app), listener) in apps.into_iter().zip(listeners) {
        let rx = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = app.serve(listener, wait(rx)).await {
                tracing::error!(function = name, error = %e, "server stopped with an error");
            }
        });
    }

    if let Some(bus) = local_bus {
        // pubsub.tf's retry policy on every push subscription (10 s..600 s):
        // with the audit feed's 100 attempts, an entry the alerter nacks
        // (held, or its alerts not yet taken by a sink) lives for hours, as
        // on Pub/Sub, instead of being dead-lettered within seconds.
        let dispatcher = Dispatcher::new(bus, issuer.clone())
            .backoff(topology::MIN_BACKOFF, topology::MAX_BACKOFF);
        tokio::spawn(dispatcher.run(wait(shutdown.clone())));
    }
    tokio::spawn(crate::dev_scheduler::run(
        crate::dev_scheduler::jobs(&stack, config.github_app_id.is_some()),
        issuer,
        identities.scheduler.clone(),
        wait(shutdown),
    ));
    Ok(stack)
}

fn fconfig(env: &Env, principal: &str) -> Result<Config, Failure> {
    Ok(Config::from_env(env, principal)?)
}

async fn wait(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The local bus's push subscriptions: (name, topic, function, route,
/// delivery attempts), mirroring infra/terraform/pubsub.tf (docs/design.md,
/// Wiring; the names predate pubsub.tf's and are kept so an existing home
/// keeps its queued messages). The audit-log feed gets pubsub.tf's 100
/// attempts: the alerter nacks held and undelivered entries (contract 6).
pub(crate) const LOCAL_PUSHES: [(&str, &str, Function, &str, i32); 4] = [
    (
        "webhook-ingest-rotation",
        names::TOPIC_ROTATION_EVENTS,
        Function::WebhookIngest,
        webhook_ingest::ROUTE_ROTATION,
        topology::PUSH_MAX_DELIVERY_ATTEMPTS,
    ),
    (
        "audit-alerter-rotation",
        names::TOPIC_ROTATION_EVENTS,
        Function::AuditAlerter,
        audit_alerter::ROUTE_ROTATION,
        topology::PUSH_MAX_DELIVERY_ATTEMPTS,
    ),
    (
        "rotation-worker-secret-events",
        names::TOPIC_SECRET_EVENTS,
        Function::RotationWorker,
        rotation_worker::ROUTE_SECRET_EVENTS,
        topology::PUSH_MAX_DELIVERY_ATTEMPTS,
    ),
    (
        "audit-alerter-audit-logs",
        names::TOPIC_AUDIT_LOGS,
        Function::AuditAlerter,
        audit_alerter::ROUTE_AUDIT_LOG,
        topology::AUDIT_MAX_DELIVERY_ATTEMPTS,
    ),
];

/// Local push subscriptions ([`LOCAL_PUSHES`]) plus the extra github-events
/// pushes.
fn subscribe(bus: &LocalBus, stack: &Stack, github_events: &[String]) -> Result<(), Failure> {
    let mut subs = LOCAL_PUSHES
        .iter()
        .map(|(name, topic, function, route, attempts)| {
            (
                name.to_string(),
                *topic,
                format!("http://{}{route}", stack.addr(*function)),
                *attempts,
            )
        })
        .collect::<Vec<_>>();
    for (i, u) in github_events.iter().enumerate() {
        if url::Url::parse(u).is_err() {
            return Err(Failure(format!("--push-github-events {u:?} is not a URL")));
        }
        subs.push((
            format!("github-events-push-{}", i + 1),
            names::TOPIC_GITHUB_EVENTS,
            u.clone(),
            topology::PUSH_MAX_DELIVERY_ATTEMPTS,
        ));
    }
    for (name, topic, endpoint, attempts) in subs {
        bus.subscribe(Subscription {
            name,
            topic: topic.to_string(),
            push_endpoint: endpoint,
            audience: None,
            max_attempts: attempts.unsigned_abs(),
        })?;
    }
    Ok(())
}

/// First start: a random webhook secret and a fresh App key, both `current`.
/// Seeded as the rotation worker, the identity that provisions secrets.
async fn seed(env: &Env, home: &Path, identities: &Identities) -> Result<(), Failure> {
    let mut e = env.clone();
    e.set("PATCHPANDA_BACKEND", "local")
        .set("PATCHPANDA_HOME", home.display().to_string())
        .set("PATCHPANDA_PRINCIPAL", &identities.rotation_worker);
    let config = Config::from_env(&e, &identities.rotation_worker)?;
    let b = Backends::open(&config).await?;
    let seeder = Seeder {
        store: b.secrets.as_ref(),
        bus: b.bus.as_ref(),
        principal: &identities.rotation_worker,
    };
    let webhook = config.secret_id(names::WEBHOOK_SECRET);
    if seeder
        .seed_one(names::WEBHOOK_SECRET, &webhook, || {
            let bytes: [u8; 32] = rand::random();
            Ok(SecretValue::new(hex::encode(bytes).into_bytes()))
        })
        .await?
    {
        eprintln!("Seeded {webhook} with a random 32-byte secret.");
    }
    let key = config.secret_id(names::GITHUB_PRIVATE_KEY);
    if seeder
        .seed_one(names::GITHUB_PRIVATE_KEY, &key, dev_private_key)
        .await?
    {
        eprintln!(
            "Seeded {key} with a generated RSA-2048 key (the local stand-in for your App's key)."
        );
    }
    let examples = home.join("examples");
    let ping = examples.join("ping.json");
    if !ping.exists() {
        std::fs::create_dir_all(&examples)?;
        std::fs::write(&ping, PING_EXAMPLE)?;
    }
    Ok(())
}

/// Seeds secrets as the rotation worker, announcing each seeding on the
/// rotation topic (`started` before the first write, `rotated` after the
/// last), as the worker announces its own changes: otherwise the alerter
/// pages the seeding as a rotator's change outside any rotation.
struct Seeder<'a> {
    store: &'a dyn SecretStore,
    bus: &'a dyn patchpanda_shared::bus::Bus,
    principal: &'a str,
}

impl Seeder<'_> {
    async fn seed_one(
        &self,
        logical: &str,
        id: &str,
        make: impl FnOnce() -> Result<SecretValue, Failure>,
    ) -> Result<bool, Failure> {
        let store = self.store;
        let exists = match store.get_secret(id).await {
            Ok(_) => true,
            Err(Error::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if exists && !store.list_versions(id).await?.is_empty() {
            return Ok(false);
        }
        let rotation_id = format!("seed-{}", uuid::Uuid::new_v4());
        self.announce(logical, NoticeEvent::Started, &rotation_id, None)
            .await?;
        match store.create_secret(id).await {
            Ok(_) | Err(Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let value = make()?;
        let v = store.add_version(id, value.expose()).await?;
        let s = store.get_secret(id).await?;
        let mut aliases = s.aliases.clone();
        aliases.insert(names::ALIAS_CURRENT.to_string(), v.number);
        store
            .update_secret(
                id,
                SecretUpdate {
                    aliases: Some(aliases),
                    annotations: None,
                },
                Some(&s.etag),
            )
            .await?;
        self.announce(logical, NoticeEvent::Rotated, &rotation_id, Some(v.number))
            .await?;
        Ok(true)
    }

    async fn announce(
        &self,
        logical: &str,
        event: NoticeEvent,
        rotation_id: &str,
        version: Option<u64>,
    ) -> Result<(), Failure> {
        let mut n = RotationNotice::new(logical, event, rotation_id);
        n.principal = Some(self.principal.to_string());
        n.version = version;
        n.detail = Some("seeded by patchpanda dev on first start".to_string());
        self.bus
            .publish(names::TOPIC_ROTATION_EVENTS, n.to_message())
            .await
            .map_err(|e| {
                Failure(format!(
                    "cannot announce the seeding of {logical} on {}: {e}",
                    names::TOPIC_ROTATION_EVENTS
                ))
            })?;
        Ok(())
    }
}

/// A fresh RSA-2048 key in PKCS#8 PEM, the local stand-in for an App key
/// downloaded from GitHub.
pub fn dev_private_key() -> Result<SecretValue, Failure> {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| Failure("cannot generate an RSA key".into()))?;
    let der = pair
        .as_der()
        .map_err(|_| Failure("cannot encode the RSA key".into()))?;
    let pem = zeroize::Zeroizing::new(pem::encode(&pem::Pem::new(
        "PRIVATE KEY",
        der.as_ref().to_vec(),
    )));
    Ok(SecretValue::new(pem.as_bytes().to_vec()))
}

fn print_banner(s: &Stack) {
    let home = s.home.display();
    // Runnable as printed, whether installed or just built by `cargo run`,
    // and from any folder: the home is named, not left to `./.patchpanda`.
    let pp = format!("{} {}", home_env(&s.home), crate::output::program());
    let payload = shell_word(&s.home.join("examples/ping.json").to_string_lossy());
    let see_published = match &s.emulator {
        // The local bus is not in use; the emulator's pull subscription
        // keeps what ingest published.
        Some(e) => format!(
            "  curl -s -X POST -H 'content-type: application/json' http://{}/v1/{}:pull -d '{{\"maxMessages\":10}}'",
            e.emulator.host,
            e.emulator
                .subscription_name("patchpanda-github-events-pull")
        ),
        None => format!("  {pp} bus messages patchpanda-github-events"),
    };
    println!(
        "PatchPanda Gateway local stack is up (state in {home})
  webhook-ingest   http://{}   POST {}
  rotation-worker  http://{}
  audit-alerter    http://{}{}{}

Send a signed test delivery (in another terminal):
  {pp} webhook send --event ping --payload-file {payload} --url http://{}{}
See what webhook-ingest published:
{see_published}
Rotate the webhook secret:
  {pp} rotate webhook-secret

Ctrl-C stops the stack; a second start reuses the same state.",
        s.ingest,
        webhook_ingest::ROUTE_WEBHOOK,
        s.worker,
        s.alerter,
        match &s.emulator {
            Some(e) => format!(
                "\n  Pub/Sub          emulator at {} (project {}), pushes relayed from {}",
                e.emulator.host, e.emulator.project, e.relay
            ),
            None => String::new(),
        },
        match &s.identities.project {
            Some(p) =>
                format!("\n  identities       {p}'s service accounts (GOOGLE_CLOUD_PROJECT)"),
            None => String::new(),
        },
        s.ingest,
        webhook_ingest::ROUTE_WEBHOOK,
    );
}

/// `PATCHPANDA_HOME=<absolute home>` as one shell word.
fn home_env(home: &std::path::Path) -> String {
    let abs = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    format!("PATCHPANDA_HOME={}", shell_word(&abs.to_string_lossy()))
}

/// `s` as one POSIX shell word: as it is when nothing in it is special,
/// else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+@%:,".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

const PING_EXAMPLE: &str = r#"{"zen":"Keep it logically awesome.","hook_id":1,"hook":{"type":"App","id":1,"name":"web","active":true,"events":["push","pull_request"],"config":{"content_type":"json","insecure_ssl":"0","url":"http://127.0.0.1:8080/webhook"}},"sender":{"login":"octocat","id":1,"type":"User"}}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// The printed commands name the home, so they run from any folder,
    /// quoted for the shell when it needs it.
    #[test]
    fn printed_commands_name_the_home_as_one_shell_word() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("home");
        std::fs::create_dir(&plain).unwrap();
        let abs = std::fs::canonicalize(&plain).unwrap();
        assert_eq!(
            home_env(&plain),
            format!("PATCHPANDA_HOME={}", abs.display())
        );
        let odd = dir.path().join("it's a home");
        std::fs::create_dir(&odd).unwrap();
        let shown = home_env(&odd);
        let abs = std::fs::canonicalize(&odd).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{shown} sh -c 'printf %s \"$PATCHPANDA_HOME\"'"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            abs.to_string_lossy()
        );
    }

    /// The emulator's subscriptions come from pubsub.tf (topology.rs); the
    /// routes they push to must be the functions' own.
    #[test]
    fn pubsub_tf_pushes_to_the_functions_routes() {
        for s in topology::pushes_to(Function::WebhookIngest) {
            assert_eq!(s.path, webhook_ingest::ROUTE_ROTATION, "{}", s.key);
        }
        assert_eq!(topology::pushes_to(Function::RotationWorker).count(), 1);
        assert_eq!(topology::pushes_to(Function::AuditAlerter).count(), 2);
    }

    /// The local bus delivers what pubsub.tf delivers, to the same routes,
    /// with as many attempts (the audit feed's 100 keep held entries).
    #[test]
    fn local_pushes_match_pubsub_tf() {
        assert_eq!(LOCAL_PUSHES.len(), topology::PUSH_SUBSCRIPTIONS.len());
        for (name, topic, function, route, attempts) in LOCAL_PUSHES {
            let tf = topology::PUSH_SUBSCRIPTIONS
                .iter()
                .find(|s| s.topic == topic && s.function == function)
                .unwrap_or_else(|| panic!("pubsub.tf has no push like {name}"));
            assert_eq!(tf.path, route, "{name}");
            assert_eq!(tf.max_attempts, attempts, "{name}");
        }
        let audit = LOCAL_PUSHES
            .iter()
            .find(|p| p.1 == names::TOPIC_AUDIT_LOGS)
            .unwrap();
        assert_eq!(audit.4, 100);
    }
}
