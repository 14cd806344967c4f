//! The secret-store half of the backend contract (see `contract.rs`):
//! Secret Manager's behaviour as the gateway relies on it, checked against
//! every `SecretStore`.

use super::*;

/// Secret Manager's behaviour as the gateway relies on it. Works in a
/// namespace of secret ids starting with `prefix` (other secrets may exist)
/// and deletes everything it created.
pub(super) async fn secret_store_contract(
    store: &dyn SecretStore,
    prefix: &str,
    settle: std::time::Duration,
) {
    let a = format!("{prefix}a");
    let b = format!("{prefix}b");
    let c = format!("{prefix}c");

    // Nothing there yet.
    assert_err!(store.get_secret(&a).await, NotFound);
    assert_err!(store.access(&a, &VersionRef::Latest).await, NotFound);
    assert_err!(store.add_version(&a, b"x").await, NotFound);
    assert_err!(store.list_versions(&a).await, NotFound);

    // Create, and create again.
    let created = store.create_secret(&a).await.unwrap();
    assert_eq!(created.id, a);
    assert!(created.aliases.is_empty());
    assert!(created.annotations.is_empty());
    assert!(!created.etag.is_empty());
    assert_err!(store.create_secret(&a).await, AlreadyExists);
    assert_err!(store.create_secret("bad/id").await, InvalidArgument);
    store.create_secret(&c).await.unwrap();
    store.create_secret(&b).await.unwrap();

    // Listing is complete (across pages) and sorted by id.
    let listed: Vec<String> = store
        .list_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .filter(|id| id.starts_with(prefix))
        .collect();
    assert_eq!(listed, vec![a.clone(), b.clone(), c.clone()]);

    // A secret with no versions has no `latest`.
    assert_err!(store.access(&a, &VersionRef::Latest).await, NotFound);
    assert!(store.list_versions(&a).await.unwrap().is_empty());

    // Versions are numbered from 1, enabled, binary-safe.
    let binary: Vec<u8> = (0..=255u8).collect();
    let v1 = store.add_version(&a, b"one").await.unwrap();
    let v2 = store.add_version(&a, &binary).await.unwrap();
    let v3 = store.add_version(&a, b"three").await.unwrap();
    assert_eq!((v1.secret.as_str(), v1.number), (a.as_str(), 1));
    assert_eq!((v2.number, v3.number), (2, 3));
    assert!(
        [&v1, &v2, &v3]
            .iter()
            .all(|v| v.state == VersionState::Enabled)
    );
    assert!(v1.create_time <= v2.create_time && v2.create_time <= v3.create_time);
    assert!(v1.destroy_time.is_none());
    assert_err!(store.add_version(&a, b"").await, InvalidArgument);
    assert_err!(
        store.add_version(&a, &vec![7u8; 64 * 1024 + 1]).await,
        InvalidArgument
    );

    // Access by number and `latest`.
    let one = store.access(&a, &VersionRef::Number(1)).await.unwrap();
    assert_eq!(one.value.expose(), b"one");
    assert_eq!(one.version.number, 1);
    assert_eq!(one.version.state, VersionState::Enabled);
    assert_eq!(one.version.create_time, v1.create_time);
    let two = store.access(&a, &VersionRef::Number(2)).await.unwrap();
    assert_eq!(two.value.expose(), &binary[..]);
    let latest = store.access(&a, &VersionRef::Latest).await.unwrap();
    assert_eq!(
        (latest.version.number, latest.value.expose()),
        (3, &b"three"[..])
    );
    assert_eq!(
        store
            .get_version(&a, &VersionRef::Latest)
            .await
            .unwrap()
            .number,
        3
    );
    assert_err!(store.access(&a, &VersionRef::Number(99)).await, NotFound);
    assert_err!(
        store.get_version(&a, &VersionRef::Number(99)).await,
        NotFound
    );
    assert_err!(
        store.access(&a, &VersionRef::alias("current")).await,
        NotFound
    );
    // A reference no rule allows is refused as such, before any lookup.
    for bad in [
        VersionRef::Number(0),
        VersionRef::alias("no/such"),
        VersionRef::alias("Latest"),
    ] {
        assert_err!(store.access(&a, &bad).await, InvalidArgument);
        assert_err!(store.get_version(&a, &bad).await, InvalidArgument);
    }

    // Aliases, guarded by the etag.
    let before = store.get_secret(&a).await.unwrap();
    let set = store
        .update_secret(
            &a,
            SecretUpdate {
                aliases: Some(aliases(&[("current", 2), ("previous", 1)])),
                annotations: None,
            },
            Some(&before.etag),
        )
        .await
        .unwrap();
    assert_eq!(set.aliases, aliases(&[("current", 2), ("previous", 1)]));
    assert_ne!(set.etag, before.etag);
    assert_eq!(store.get_secret(&a).await.unwrap().etag, set.etag);
    let current = store
        .access(&a, &VersionRef::alias("current"))
        .await
        .unwrap();
    assert_eq!(
        (current.version.number, current.value.expose()),
        (2, &binary[..])
    );
    let previous = store
        .get_version(&a, &VersionRef::alias("previous"))
        .await
        .unwrap();
    assert_eq!(previous.number, 1);

    // Versions are resources of their own: adding one or changing its state
    // leaves the secret's etag as it was (docs/etags: "updating a secret
    // version does not affect the secret ETag").
    let c1 = store.add_version(&c, b"c1").await.unwrap();
    let c_before = store.get_secret(&c).await.unwrap();
    store.add_version(&c, b"c2").await.unwrap();
    store
        .set_state(&c, c1.number, StateChange::Disable)
        .await
        .unwrap();
    assert_eq!(store.get_secret(&c).await.unwrap().etag, c_before.etag);
    // An update that changes nothing still makes a new etag.
    let same = store
        .update_secret(
            &a,
            SecretUpdate {
                aliases: Some(set.aliases.clone()),
                annotations: None,
            },
            Some(&set.etag),
        )
        .await
        .unwrap();
    assert_eq!(same.aliases, set.aliases);
    assert_ne!(same.etag, set.etag);
    // The old etag is now stale.
    assert_err!(
        store
            .update_secret(
                &a,
                SecretUpdate {
                    aliases: Some(set.aliases.clone()),
                    annotations: None,
                },
                Some(&set.etag),
            )
            .await,
        FailedPrecondition
    );
    let set = same;

    // A stale etag is refused with FAILED_PRECONDITION, as Secret Manager
    // answers it (https://cloud.google.com/secret-manager/docs/etags), and
    // changes nothing.
    assert_err!(
        store
            .update_secret(
                &a,
                SecretUpdate {
                    aliases: Some(aliases(&[("current", 3)])),
                    annotations: None,
                },
                Some(&before.etag),
            )
            .await,
        FailedPrecondition
    );
    assert_eq!(store.get_secret(&a).await.unwrap().aliases, set.aliases);

    // Moving aliases with the fresh etag.
    let moved = store
        .update_secret(
            &a,
            SecretUpdate {
                aliases: Some(aliases(&[("current", 3), ("previous", 2)])),
                annotations: None,
            },
            Some(&set.etag),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .access(&a, &VersionRef::alias("current"))
            .await
            .unwrap()
            .value
            .expose(),
        b"three"
    );

    // Annotations alone leave aliases be; no etag means unconditional.
    let annotations = BTreeMap::from([("patchpanda-step".to_string(), "set".to_string())]);
    let annotated = store
        .update_secret(
            &a,
            SecretUpdate {
                aliases: None,
                annotations: Some(annotations.clone()),
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(annotated.annotations, annotations);
    assert_eq!(annotated.aliases, moved.aliases);
    assert_ne!(annotated.etag, moved.etag);
    assert_eq!(store.get_secret(&a).await.unwrap().annotations, annotations);
    assert_err!(
        store.update_secret(&a, SecretUpdate::default(), None).await,
        InvalidArgument
    );
    assert_err!(
        store
            .update_secret(
                &a,
                SecretUpdate {
                    aliases: Some(aliases(&[("latest", 1)])),
                    annotations: None,
                },
                None,
            )
            .await,
        InvalidArgument
    );
    // Reserved names in any case, and names that do not start with a letter.
    for reserved in ["Latest", "LATEST", "new", "NEW", "New", "1st", "-x"] {
        let refused = store
            .update_secret(
                &a,
                SecretUpdate {
                    aliases: Some(aliases(&[(reserved, 1)])),
                    annotations: None,
                },
                None,
            )
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "alias {reserved:?}: {:?}",
            refused.map(|_| ())
        );
    }
    // Upper case is allowed, and an alias that can be set can be named.
    let cased = store
        .update_secret(
            &a,
            SecretUpdate {
                aliases: Some(aliases(&[("current", 3), ("previous", 2), ("Old-1", 1)])),
                annotations: None,
            },
            None,
        )
        .await
        .unwrap();
    let by_name: VersionRef = "Old-1".parse().unwrap();
    assert_eq!(
        store.access(&a, &by_name).await.unwrap().value.expose(),
        b"one"
    );
    // Unverified (live test): an alias must name a version that exists
    // (INVALID_ARGUMENT) and is not destroyed (below).
    assert_err!(
        store
            .update_secret(
                &a,
                SecretUpdate {
                    aliases: Some(aliases(&[("current", 99)])),
                    annotations: None,
                },
                None,
            )
            .await,
        InvalidArgument
    );
    store
        .update_secret(
            &a,
            SecretUpdate {
                aliases: Some(moved.aliases.clone()),
                annotations: None,
            },
            Some(&cased.etag),
        )
        .await
        .unwrap();
    assert_err!(
        store
            .update_secret(
                &a,
                SecretUpdate {
                    aliases: None,
                    annotations: Some(BTreeMap::from([("-bad-".to_string(), String::new())])),
                },
                None,
            )
            .await,
        InvalidArgument
    );

    // Disabled versions cannot be read, by number, alias or `latest` (which
    // is the newest version whatever its state).
    let disabled = store.set_state(&a, 3, StateChange::Disable).await.unwrap();
    assert_eq!(
        (disabled.number, disabled.state),
        (3, VersionState::Disabled)
    );
    assert_err!(
        eventually!(
            settle,
            store.access(&a, &VersionRef::Number(3)).await,
            Err(Error::FailedPrecondition(_))
        ),
        FailedPrecondition
    );
    assert_err!(
        eventually!(
            settle,
            store.access(&a, &VersionRef::Latest).await,
            Err(Error::FailedPrecondition(_))
        ),
        FailedPrecondition
    );
    assert_err!(
        eventually!(
            settle,
            store.access(&a, &VersionRef::alias("current")).await,
            Err(Error::FailedPrecondition(_))
        ),
        FailedPrecondition
    );
    assert_eq!(
        store
            .get_version(&a, &VersionRef::Number(3))
            .await
            .unwrap()
            .state,
        VersionState::Disabled
    );
    // Others are unaffected.
    assert_eq!(
        store
            .access(&a, &VersionRef::alias("previous"))
            .await
            .unwrap()
            .version
            .number,
        2
    );

    // Enabling restores access.
    let enabled = store.set_state(&a, 3, StateChange::Enable).await.unwrap();
    assert_eq!(enabled.state, VersionState::Enabled);
    assert_eq!(
        eventually!(settle, store.access(&a, &VersionRef::Latest).await, Ok(_))
            .unwrap()
            .value
            .expose(),
        b"three"
    );

    // Destroyed is terminal and drops the data.
    let destroyed = store.set_state(&a, 1, StateChange::Destroy).await.unwrap();
    assert_eq!(destroyed.state, VersionState::Destroyed);
    assert!(destroyed.destroy_time.is_some());
    assert_err!(
        eventually!(
            settle,
            store.access(&a, &VersionRef::Number(1)).await,
            Err(Error::FailedPrecondition(_))
        ),
        FailedPrecondition
    );
    assert_err!(
        store.set_state(&a, 1, StateChange::Enable).await,
        FailedPrecondition
    );
    assert_err!(
        store.set_state(&a, 1, StateChange::Disable).await,
        FailedPrecondition
    );
    assert_err!(
        store.set_state(&a, 99, StateChange::Disable).await,
        NotFound
    );
    // Unverified (live test): no alias may name a destroyed version, and a
    // version an alias names cannot be destroyed.
    assert_err!(
        store
            .update_secret(
                &a,
                SecretUpdate {
                    aliases: Some(aliases(&[("current", 3), ("previous", 1)])),
                    annotations: None,
                },
                None,
            )
            .await,
        FailedPrecondition
    );
    assert_err!(
        store.set_state(&a, 2, StateChange::Destroy).await,
        FailedPrecondition
    );

    // Versions list newest first with their states.
    let versions: Vec<(u64, VersionState)> = store
        .list_versions(&a)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.number, v.state))
        .collect();
    assert_eq!(
        versions,
        vec![
            (3, VersionState::Enabled),
            (2, VersionState::Enabled),
            (1, VersionState::Destroyed)
        ]
    );

    // A fourth version takes the next number; `latest` follows it; numbers
    // are never reused.
    let v4 = store.add_version(&a, b"four").await.unwrap();
    assert_eq!(v4.number, 4);
    assert_eq!(
        store
            .access(&a, &VersionRef::Latest)
            .await
            .unwrap()
            .value
            .expose(),
        b"four"
    );
    // The `current` alias stays where it was put.
    assert_eq!(
        store
            .access(&a, &VersionRef::alias("current"))
            .await
            .unwrap()
            .version
            .number,
        3
    );

    // Deleting removes the secret and its versions.
    for id in [&b, &c, &a] {
        store.delete_secret(id).await.unwrap();
        assert_err!(store.get_secret(id).await, NotFound);
        assert_err!(store.delete_secret(id).await, NotFound);
    }
    assert_err!(store.access(&a, &VersionRef::Number(3)).await, NotFound);
    let left = store.list_secrets().await.unwrap();
    assert!(left.iter().all(|s| !s.id.starts_with(prefix)), "{left:?}");
}
