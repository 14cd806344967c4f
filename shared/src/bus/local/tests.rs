//! Storage-level tests with injected time: leases, ordering, dead-lettering,
//! retention. Push delivery itself is covered by tests/it/bus_local.rs.

use super::*;

const OWNER: &str = "owner-a";

fn bus() -> (tempfile::TempDir, LocalBus) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(dir.path()).unwrap();
    let bus = LocalBus::open(&home).unwrap();
    (dir, bus)
}

fn sub(name: &str, topic: &str) -> Subscription {
    Subscription::new(name, topic, "http://127.0.0.1:9/push")
}

/// Commits without the opportunistic pruning, so tests choose the time.
fn publish_at(bus: &LocalBus, topic: &str, m: Message, at: i64) -> String {
    bus.commit_message(topic, &m, at).unwrap().to_string()
}

#[test]
fn ids_increase_and_messages_list_oldest_first() {
    let (_d, bus) = bus();
    let now = now_ms();
    let a = publish_at(&bus, "topic-a", Message::new("one"), now);
    let b = publish_at(&bus, "topic-b", Message::new("other"), now);
    let c = publish_at(
        &bus,
        "topic-a",
        Message::new("two").attribute("k", "v").ordering_key("key"),
        now,
    );
    let (a, b, c): (u64, u64, u64) = (a.parse().unwrap(), b.parse().unwrap(), c.parse().unwrap());
    assert!(a < b && b < c);
    let listed = bus.messages("topic-a").unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].data, b"one");
    assert_eq!(listed[1].id, c.to_string());
    assert_eq!(listed[1].attributes["k"], "v");
    assert_eq!(listed[1].ordering_key.as_deref(), Some("key"));
    assert!(bus.messages("never-used").unwrap().is_empty());
    assert!(bus.messages("x").is_err());
}

#[test]
fn subscriptions_only_get_later_messages_and_updates_keep_the_topic() {
    let t0 = now_ms();
    let (_d, bus) = bus();
    publish_at(&bus, "topic-a", Message::new("before"), t0);
    bus.subscribe(sub("sub-1", "topic-a")).unwrap();
    assert_eq!(bus.pending("sub-1").unwrap(), 0);
    publish_at(&bus, "topic-a", Message::new("after"), t0);
    assert_eq!(bus.pending("sub-1").unwrap(), 1);

    // Idempotent, and updates the endpoint.
    bus.subscribe(sub("sub-1", "topic-a").audience("https://aud"))
        .unwrap();
    let subs = bus.subscriptions().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].effective_audience(), "https://aud");
    assert_eq!(subs[0].max_attempts, DEFAULT_MAX_ATTEMPTS);

    let err = bus.subscribe(sub("sub-1", "topic-b")).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err}");
    for bad in [
        sub("s", "topic-a"),
        Subscription::new("sub-2", "topic-a", "not-a-url"),
        sub("sub-2", "topic-a").max_attempts(1),
        sub("sub-2", "topic-a").audience(" "),
    ] {
        assert!(matches!(
            bus.subscribe(bad).unwrap_err(),
            Error::InvalidArgument(_)
        ));
    }
    assert_eq!(bus.subscriptions().unwrap().len(), 1);
}

#[test]
fn a_lease_hides_a_row_until_it_expires() {
    let t0 = now_ms();
    let (_d, bus) = bus();
    bus.subscribe(sub("sub-1", "topic-a")).unwrap();
    publish_at(&bus, "topic-a", Message::new("m"), t0);
    let first = bus.claim(OWNER, 10, t0, t0 + 1000).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    // Another dispatcher sees nothing while the lease holds...
    assert!(
        bus.claim("owner-b", 10, t0 + 999, t0 + 2000)
            .unwrap()
            .is_empty()
    );
    // ...and takes over once it lapsed (the first one died mid-push).
    let second = bus.claim("owner-b", 10, t0 + 1000, t0 + 2000).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempt, 2);
    // The dead owner's late nack must not override the new lease.
    assert!(
        !bus.nack(OWNER, "sub-1", second[0].message_seq, t0 + 1001, t0 + 1001)
            .unwrap()
    );
    assert!(
        bus.claim("owner-c", 10, t0 + 1500, t0 + 3000)
            .unwrap()
            .is_empty()
    );
    bus.ack("sub-1", second[0].message_seq).unwrap();
    assert_eq!(bus.pending("sub-1").unwrap(), 0);
}

#[test]
fn nack_schedules_a_retry_and_release_frees_leases() {
    let t0 = now_ms();
    let (_d, bus) = bus();
    bus.subscribe(sub("sub-1", "topic-a")).unwrap();
    publish_at(&bus, "topic-a", Message::new("m"), t0);
    let c = bus.claim(OWNER, 10, t0, t0 + 10_000).unwrap();
    assert!(
        !bus.nack(OWNER, "sub-1", c[0].message_seq, t0, t0 + 500)
            .unwrap()
    );
    assert!(
        bus.claim(OWNER, 10, t0 + 499, t0 + 10_000)
            .unwrap()
            .is_empty()
    );
    assert_eq!(bus.next_due().unwrap(), Some(t0 + 500));
    let c = bus.claim(OWNER, 10, t0 + 500, t0 + 10_000).unwrap();
    assert_eq!(c[0].attempt, 2);
    assert_eq!(bus.release(OWNER).unwrap(), 1);
    assert_eq!(
        bus.claim("owner-b", 10, t0 + 501, t0 + 10_000)
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn ordering_keys_hold_later_messages_back() {
    let t0 = now_ms();
    let (_d, bus) = bus();
    bus.subscribe(sub("sub-1", "topic-a")).unwrap();
    let k1 = publish_at(&bus, "topic-a", Message::new("k1").ordering_key("K"), t0);
    publish_at(&bus, "topic-a", Message::new("k2").ordering_key("K"), t0);
    publish_at(&bus, "topic-a", Message::new("free"), t0);
    publish_at(&bus, "topic-a", Message::new("j1").ordering_key("J"), t0);
    let batch = bus.claim(OWNER, 10, t0, t0 + 1000).unwrap();
    let mut got: Vec<_> = batch.iter().map(|c| c.message.data.clone()).collect();
    got.sort();
    assert_eq!(got, vec![b"free".to_vec(), b"j1".to_vec(), b"k1".to_vec()]);
    // k1 nacked: k2 still waits, even once k1's retry is due.
    let k1_seq: i64 = k1.parse().unwrap();
    bus.nack(OWNER, "sub-1", k1_seq, t0, t0 + 10).unwrap();
    let next = bus.claim(OWNER, 10, t0 + 10, t0 + 1000).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].message.data, b"k1");
    bus.ack("sub-1", k1_seq).unwrap();
    let next = bus.claim(OWNER, 10, t0 + 11, t0 + 1000).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].message.data, b"k2");
}

#[test]
fn exhausted_rows_are_dead_lettered_with_a_copy() {
    let t0 = now_ms();
    let (_d, bus) = bus();
    bus.subscribe(sub("sub-1", "topic-a")).unwrap();
    let id = publish_at(
        &bus,
        "topic-a",
        Message::new("poison").attribute("a", "1").ordering_key("K"),
        t0,
    );
    let after = publish_at(&bus, "topic-a", Message::new("next").ordering_key("K"), t0);
    let seq: i64 = id.parse().unwrap();
    let mut now = t0;
    for attempt in 1..=DEFAULT_MAX_ATTEMPTS {
        let c = bus.claim(OWNER, 1, now, now + 1000).unwrap();
        assert_eq!(c[0].attempt, attempt);
        assert_eq!(c[0].message_seq, seq);
        let dead = bus.nack(OWNER, "sub-1", seq, now, now).unwrap();
        assert_eq!(dead, attempt == DEFAULT_MAX_ATTEMPTS);
        now += 1;
    }
    let dead = bus.dead_letters("sub-1").unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    let copies = bus.messages("topic-a-dead-letter").unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].data, b"poison");
    assert_eq!(copies[0].attributes["a"], "1");
    assert_eq!(
        copies[0].attributes["CloudPubSubDeadLetterSourceDeliveryCount"],
        "5"
    );
    // The key is no longer blocked by the dead message.
    let c = bus.claim(OWNER, 10, now, now + 1000).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].message.id, after);
}

#[test]
fn a_lease_that_lapses_on_the_last_attempt_dead_letters() {
    let t0 = now_ms();
    let (_d, bus) = bus();
    bus.subscribe(sub("sub-1", "topic-a")).unwrap();
    publish_at(&bus, "topic-a", Message::new("m"), t0);
    let mut now = t0;
    for _ in 0..DEFAULT_MAX_ATTEMPTS {
        // Each lease lapses unanswered, like a dispatcher dying mid-push.
        assert_eq!(bus.claim(OWNER, 1, now, now + 10).unwrap().len(), 1);
        now += 10;
    }
    assert!(bus.claim(OWNER, 1, now, now + 10).unwrap().is_empty());
    assert_eq!(bus.dead_letters("sub-1").unwrap().len(), 1);
    assert_eq!(bus.pending("sub-1").unwrap(), 0);
}

#[test]
fn retention_hides_and_prunes_old_messages_with_their_deliveries() {
    let (_d, bus) = bus();
    let bus = bus.with_retention(Duration::from_secs(3600));
    bus.subscribe(sub("sub-1", "topic-a")).unwrap();
    let old = now_ms() - 2 * 3600 * 1000;
    publish_at(&bus, "topic-a", Message::new("old"), old);
    publish_at(&bus, "topic-a", Message::new("new"), now_ms());
    let listed = bus.messages("topic-a").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].data, b"new");
    assert_eq!(bus.pending("sub-1").unwrap(), 2);
    // Publishing prunes what is past retention, at most once a minute.
    bus.publish_blocking("topic-a", &Message::new("newest"), now_ms())
        .unwrap();
    assert_eq!(bus.pending("sub-1").unwrap(), 2);
    assert_eq!(bus.messages("topic-a").unwrap().len(), 2);
    // An explicit cutoff prunes the rest, delivered or not.
    let pruned = bus
        .prune_older_than(Utc::now() + chrono::Duration::seconds(1))
        .unwrap();
    assert_eq!(pruned, 2);
    assert_eq!(bus.pending("sub-1").unwrap(), 0);
}

#[tokio::test]
async fn publish_validates_and_normalizes() {
    let (_d, bus) = bus();
    for (topic, m) in [
        ("goog-x", Message::new("x")),
        ("topic-a", Message::default()),
        ("topic-a", Message::new("x").attribute("googx", "v")),
    ] {
        let err = bus.publish(topic, m).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
    assert!(bus.messages("topic-a").unwrap().is_empty());
    bus.publish("topic-a", Message::new("x").ordering_key(""))
        .await
        .unwrap();
    assert_eq!(bus.messages("topic-a").unwrap()[0].ordering_key, None);
    bus.check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_share_commits_and_none_is_lost() {
    let (_d, bus) = bus();
    bus.subscribe(sub("sub-1", "topic-a")).unwrap();
    let publishes = (0..64).map(|i| {
        let bus = bus.clone();
        // Half of them large enough for a segment: each id must still
        // name its own body when batch-mates share one write.
        async move { bus.publish("topic-a", Message::new(body_of(i))).await }
    });
    let ids: Vec<String> = futures::future::join_all(publishes)
        .await
        .into_iter()
        .collect::<Result<_>>()
        .unwrap();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 64, "every publish got its own id");
    let stored = bus.messages("topic-a").unwrap();
    assert_eq!(stored.len(), 64);
    let mut bodies: Vec<String> = stored
        .iter()
        .map(|m| String::from_utf8(m.data.clone()).unwrap())
        .collect();
    bodies.sort();
    let mut want: Vec<String> = (0..64).map(body_of).collect();
    want.sort();
    assert_eq!(bodies, want);
    // Each publisher got the id of its own message, not a batch-mate's.
    let by_id: std::collections::BTreeMap<&str, &[u8]> = stored
        .iter()
        .map(|m| (m.id.as_str(), m.data.as_slice()))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(by_id[id.as_str()], body_of(i).as_bytes());
    }
    assert_eq!(bus.pending("sub-1").unwrap(), 64);
}

fn body_of(i: usize) -> String {
    let pad = if i.is_multiple_of(2) { 2000 } else { 0 };
    format!("m{i}{}", ".".repeat(pad))
}
