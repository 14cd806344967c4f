# Topics and subscriptions (docs/design.md, "Wiring").
# Every push subscription dead-letters after 5 attempts (as the local bus
# does; the audit-log feed after 100, see below), the pull subscriptions
# after 10, to a per-topic dead-letter topic, and every dead-letter topic
# has a pull subscription, so nothing dead-lettered is dropped.

locals {
  topics = {
    "github-events"   = "patchpanda-github-events"
    "rotation-events" = "patchpanda-rotation-events"
    "secret-events"   = "patchpanda-secret-events"
    "audit-logs"      = "patchpanda-audit-logs"
    "alerts"          = "patchpanda-alerts"
  }

  # Push request timeout = ack deadline, so each deadline covers the
  # handler's worst case: a rotation step calls GitHub and Secret Manager
  # several times; the others are quick.
  #
  # max_attempts: 5 (Pub/Sub's minimum) everywhere but the audit-log feed.
  # audit-alerter acknowledges an audit entry only once a paging sink took
  # every alert it raised, and nacks (503) a change it holds while waiting
  # for a late rotation notice; with backoff capped at 600 s, 100 attempts
  # (Pub/Sub's maximum) keep an entry alive through roughly 16 hours of a
  # Slack/PagerDuty outage before it is dead-lettered (and the dead-letter
  # alert policy pages through Cloud Monitoring instead).
  push_subscriptions = {
    "rotation-events-webhook-ingest" = { topic = "rotation-events", service = "webhook-ingest", path = "/events/rotation", ack_deadline = 30, max_attempts = 5 }
    "rotation-events-audit-alerter"  = { topic = "rotation-events", service = "audit-alerter", path = "/events/rotation", ack_deadline = 30, max_attempts = 5 }
    "audit-logs-audit-alerter"       = { topic = "audit-logs", service = "audit-alerter", path = "/events/audit-log", ack_deadline = 60, max_attempts = 100 }
    "secret-events-rotation-worker"  = { topic = "secret-events", service = "rotation-worker", path = "/events/secret-manager", ack_deadline = 600, max_attempts = 5 }
  }

  # Nothing in this deployment consumes these two; the App's own workers and
  # the on-call do. A subscription keeps messages that no one has pulled yet
  # (a topic with no subscription drops them).
  pull_subscriptions = {
    "github-events-pull" = "github-events"
    "alerts-pull"        = "alerts"
  }

  extra_github_pushes = { for i, url in var.github_events_push_endpoints : "github-events-push-${i}" => url }

  # All subscriptions reading a source topic, by key => topic key: the Pub/Sub
  # service agent must be able to ack what it forwards to a dead-letter topic.
  source_subscriptions = merge(
    { for k, v in local.push_subscriptions : k => v.topic },
    local.pull_subscriptions,
    { for k, _ in local.extra_github_pushes : k => "github-events" },
  )

  week = "604800s"
}

resource "google_pubsub_topic" "main" {
  for_each     = local.topics
  project      = var.project
  name         = each.value
  kms_key_name = google_kms_crypto_key.pubsub.id
  labels       = local.common_labels
  # Like the local bus: a week of history, delivered or not, so a new
  # subscription can seek back and replay.
  message_retention_duration = local.week

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

resource "google_pubsub_topic" "dead_letter" {
  for_each                   = local.topics
  project                    = var.project
  name                       = "${each.value}-dlq"
  kms_key_name               = google_kms_crypto_key.pubsub.id
  labels                     = local.common_labels
  message_retention_duration = local.week

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

resource "google_pubsub_subscription" "dead_letter" {
  for_each                   = local.topics
  project                    = var.project
  name                       = "${each.value}-dlq-pull"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  labels                     = local.common_labels
  ack_deadline_seconds       = 60
  message_retention_duration = local.week

  # Default subscriptions expire after 31 idle days; a dead-letter queue is
  # idle by design.
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "push" {
  for_each                   = local.push_subscriptions
  project                    = var.project
  name                       = "patchpanda-${each.key}"
  topic                      = google_pubsub_topic.main[each.value.topic].id
  labels                     = local.common_labels
  ack_deadline_seconds       = each.value.ack_deadline
  message_retention_duration = local.week

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.fn[each.value.service].uri}${each.value.path}"
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = local.audiences[each.value.service]
    }
  }

  # Exponential backoff between redeliveries of a nacked message, from 10 s
  # up to Pub/Sub's ceiling of 600 s.
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.value.topic].id
    max_delivery_attempts = each.value.max_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.private_invoker,
    google_pubsub_topic_iam_member.pubsub_agent_dead_letters,
  ]
}

resource "google_pubsub_subscription" "pull" {
  for_each                   = local.pull_subscriptions
  project                    = var.project
  name                       = "patchpanda-${each.key}"
  topic                      = google_pubsub_topic.main[each.value].id
  labels                     = local.common_labels
  ack_deadline_seconds       = 60
  message_retention_duration = local.week

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.value].id
    max_delivery_attempts = 10
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.pubsub_agent_dead_letters]
}

resource "google_pubsub_subscription" "github_events_push" {
  for_each                   = local.extra_github_pushes
  project                    = var.project
  name                       = "patchpanda-${each.key}"
  topic                      = google_pubsub_topic.main["github-events"].id
  labels                     = local.common_labels
  ack_deadline_seconds       = 60
  message_retention_duration = local.week

  push_config {
    push_endpoint = each.value
    oidc_token {
      service_account_email = google_service_account.push.email
      audience              = each.value
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter["github-events"].id
    max_delivery_attempts = 5
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_pubsub_topic_iam_member.pubsub_agent_dead_letters]
}

# ---------------------------------------------------------------- publishers

locals {
  # Function => the topic it publishes to (docs/design.md).
  publishers = {
    "webhook-ingest"  = "github-events"
    "rotation-worker" = "rotation-events"
    "audit-alerter"   = "alerts"
  }
}

resource "google_pubsub_topic_iam_member" "function_publishes" {
  for_each = local.publishers
  project  = var.project
  topic    = google_pubsub_topic.main[each.value].name
  role     = google_project_iam_custom_role.topic_publisher.id
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_pubsub_topic_iam_member" "function_checks_bus" {
  for_each = { for f, t in local.publishers : f => t if t != "github-events" }
  project  = var.project
  topic    = google_pubsub_topic.main["github-events"].name
  role     = google_project_iam_custom_role.topic_viewer.id
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

# Secret Manager publishes its event notifications (and SECRET_ROTATE) as its
# service agent; a secret with a topic it cannot publish to is rejected.
resource "google_pubsub_topic_iam_member" "secretmanager_agent_publishes_secret_events" {
  project = var.project
  topic   = google_pubsub_topic.main["secret-events"].name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_project_service_identity.secretmanager.email}"
}

# ---------------------------------------------------------------- dead letters
# Pub/Sub forwards a message to the dead-letter topic as its service agent,
# which must publish there and ack (subscribe) on the source subscription.

resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letters" {
  for_each = local.topics
  project  = var.project
  topic    = google_pubsub_topic.dead_letter[each.key].name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

locals {
  source_subscription_names = merge(
    { for k, s in google_pubsub_subscription.push : k => s.name },
    { for k, s in google_pubsub_subscription.pull : k => s.name },
    { for k, s in google_pubsub_subscription.github_events_push : k => s.name },
  )
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_acks_sources" {
  # Keyed by the statically known set, so the plan knows every instance.
  for_each     = local.source_subscriptions
  project      = var.project
  subscription = local.source_subscription_names[each.key]
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_project_service_identity.pubsub.email}"
}
