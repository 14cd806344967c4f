# Cloud Monitoring alert policies: what audit-alerter cannot report about
# itself (it is down, silent, or its paging sinks are), the pipeline's
# health (dead letters, backlogs, 5xx, latency, uptime), and backstops for
# the worst detections (rotation failures, secret read spikes, service
# account keys). Every policy notifies every channel in notifications.tf,
# and its documentation tells on-call which `patchpanda` command to run
# first. docs/deploy.md ("Monitoring") explains each in full.
#
# `$${...}` below is Cloud Monitoring's documentation variable syntax
# (escaped from Terraform's interpolation), filled in per incident.

locals {
  ingest_service  = local.service_names["webhook-ingest"]
  alerter_service = local.service_names["audit-alerter"]

  run_requests = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\""

  # What to run when a topic's dead-letter subscription fills, by topic.
  dead_letter_docs = {
    "github-events"   = "Deliveries the App's own consumers of patchpanda-github-events (the -pull subscription or an extra push endpoint) failed 10 (pull) or 5 (push) times. The gateway accepted and published them; nothing is lost yet. Run `patchpanda health`, then fix the consumer and re-publish what the DLQ holds."
    "rotation-events" = "Rotation notices webhook-ingest or audit-alerter did not take 5 times. webhook-ingest may still use an old secret (it also reloads on its own refresh) and audit-alerter may page on a routine rotation. Run `patchpanda health` and `patchpanda status`; if a rotation is half done, `patchpanda rotate NAME` resumes it."
    "secret-events"   = "Secret Manager events (SECRET_ROTATE, SECRET_VERSION_ADD) rotation-worker failed 5 times: a scheduled rotation or an uploaded key was not handled. Run `patchpanda status` to see what is due or pending, then `patchpanda rotate NAME` for each."
    "audit-logs"      = "Audit entries audit-alerter could not process and page about for 100 attempts (about 16 hours): the alerts they would have raised were never delivered. Run `patchpanda health` (with --alerter-url) to find why, then read each entry in the DLQ yourself: every one is a change to a secret, key, account or the gateway's plumbing that nobody has reviewed."
    "alerts"          = "Alerts published on patchpanda-alerts that their pull consumer (patchpanda-alerts-pull) failed 10 times. They were also logged and sent to the alerter's sinks. Run `patchpanda health`, then review them."
  }
}

# ---------------------------------------------------------------- dead letters

resource "google_monitoring_alert_policy" "dead_letter" {
  for_each     = local.topics
  project      = var.project
  display_name = "PatchPanda: ${each.value} messages dead-lettered"
  combiner     = "OR"
  severity     = each.key == "audit-logs" ? "CRITICAL" : "ERROR"

  conditions {
    display_name = "${google_pubsub_subscription.dead_letter[each.key].name} holds messages"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letter[each.key].name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  conditions {
    display_name = "${google_pubsub_subscription.dead_letter[each.key].name} has had a message for over an hour"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.dead_letter[each.key].name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 3600
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **${each.value}-dlq-pull is not empty.** ${local.dead_letter_docs[each.key]}

      1. `patchpanda health` — which function or dependency is failing.
      2. Look without acknowledging: `gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter[each.key].name} --limit=10 --format=json`.
      3. Once the cause is fixed, handle each message, then acknowledge it (`gcloud pubsub subscriptions pull ${google_pubsub_subscription.dead_letter[each.key].name} --auto-ack --limit=N`). The DLQ keeps messages 7 days.
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

# Push subscriptions whose endpoint is not keeping up (the audit-log feed has
# its own policy below).
resource "google_monitoring_alert_policy" "push_backlog" {
  project      = var.project
  display_name = "PatchPanda: push subscription backlog"
  combiner     = "OR"
  severity     = "ERROR"

  conditions {
    display_name = "oldest unacked message older than 15 min"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=monitoring.regex.full_match(\"${join("|", [for k, s in google_pubsub_subscription.push : s.name if k != "audit-logs-audit-alerter"])}\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 900
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **$${resource.label.subscription_id}: messages wait for more than 15 minutes.** Its Cloud Run endpoint keeps refusing them (5xx, or a 4xx it should not send) or is down; Pub/Sub retries with backoff and dead-letters after 5 attempts.

      1. `patchpanda health` — is the function up, are its secrets, key and bus reachable?
      2. `patchpanda status` — for rotation events: is a rotation stuck? `patchpanda rotate NAME` resumes it.
      3. The endpoint's errors: `gcloud logging read 'resource.type="cloud_run_revision" AND severity>=WARNING' --limit=50`.
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

# ---------------------------------------------------------------- webhook-ingest

resource "google_monitoring_alert_policy" "webhook_5xx" {
  project      = var.project
  display_name = "PatchPanda: webhook-ingest answers 5xx"
  combiner     = "OR"
  severity     = "ERROR"

  conditions {
    display_name = "5xx share of /webhook answers above ${var.webhook_5xx_ratio}"
    condition_threshold {
      filter             = "metric.type=\"${local.log_metric.webhook_responses}\" AND resource.type=\"cloud_run_revision\" AND metric.labels.status=monitoring.regex.full_match(\"5[0-9][0-9]\")"
      denominator_filter = "metric.type=\"${local.log_metric.webhook_responses}\" AND resource.type=\"cloud_run_revision\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.webhook_5xx_ratio
      duration           = "300s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **webhook-ingest answers GitHub with 5xx.** A 503 means a verified delivery could not be published (Pub/Sub unreachable or slow) or the webhook secret could not be read; GitHub does not retry by itself, the redelivery sweep (every 10 min) asks it to.

      1. `patchpanda health` — secrets readable, bus reachable?
      2. Errors: `gcloud logging read 'resource.labels.service_name="${local.ingest_service}" AND jsonPayload.message="request failed"' --limit=20`.
      3. After the fix, check the sweep caught up (dashboard "Redeliveries"); for older failures use GitHub's App settings -> Advanced -> Recent Deliveries -> Redeliver, or `patchpanda webhook send` to test the path.
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

resource "google_monitoring_alert_policy" "webhook_latency" {
  project      = var.project
  display_name = "PatchPanda: webhook-ingest p99 latency near GitHub's 10 s limit"
  combiner     = "OR"
  severity     = "WARNING"

  conditions {
    display_name = "p99 /webhook latency above ${var.webhook_p99_latency_ms} ms"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric.webhook_latency}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.webhook_p99_latency_ms / 1000
      duration        = "300s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_99"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **1 % of GitHub's deliveries take longer than ${var.webhook_p99_latency_ms} ms.** GitHub abandons a delivery at 10 s and marks it failed (the sweep redelivers it later). Usually Pub/Sub publish is slow, a cold start (min instances 0), or instances are saturated.

      1. `patchpanda health` — the bus check's latency.
      2. Dashboard: instance count and memory of webhook-ingest; raise `webhook_min_instances` / `max_instances` if it is pinned at the maximum.
      3. `patchpanda webhook send --event ping --payload-file ping.json --url URL/webhook` to time one delivery yourself.
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

# ---------------------------------------------------------------- audit-alerter

resource "google_monitoring_alert_policy" "alerter_silent" {
  project      = var.project
  display_name = "PatchPanda: audit-alerter silent (dead man's switch)"
  combiner     = "OR"
  severity     = "CRITICAL"

  # Cloud Scheduler calls /tasks/tick every minute, so ten minutes without
  # a single request means the service, its tick job or its invoker grant
  # is gone.
  conditions {
    display_name = "no requests to ${local.alerter_service} for 10 min"
    condition_absent {
      filter   = "${local.run_requests} AND resource.labels.service_name=\"${local.alerter_service}\""
      duration = "600s"
      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  # Audit entries arrive but are not acknowledged: the alerter fails on them,
  # or (by design) nacks them because no paging sink took their alerts.
  conditions {
    display_name = "audit entries wait for more than 10 min"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=\"${google_pubsub_subscription.push["audit-logs-audit-alerter"].name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 600
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **audit-alerter is not processing audit entries: detections are not reaching anyone.** Either it gets no requests at all (service down, the `patchpanda-tick` job or the scheduler's invoker grant removed: a blinding move), or entries pile up unacknowledged (it fails on them, or Slack/PagerDuty refuse its alerts and it keeps them for redelivery).

      1. `patchpanda health --alerter-url "$PATCHPANDA_ALERTER_URL"` — is it up, can it reach its sinks?
      2. Its errors: `gcloud logging read 'resource.labels.service_name="${local.alerter_service}" AND severity>=WARNING' --limit=50` (a sink refusing alerts says so, loudly).
      3. Check nobody changed the service, the tick job or the subscription: `gcloud logging read 'protoPayload.serviceName=("run.googleapis.com" OR "cloudscheduler.googleapis.com" OR "pubsub.googleapis.com") AND protoPayload.resourceName:"patchpanda"' --freshness=1d`.
      4. Until it recovers, review secret access yourself: `patchpanda status` and the Logs Explorer query in docs/runbook.md (Compromise, step 3).
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

resource "google_monitoring_alert_policy" "audit_feed_silent" {
  project      = var.project
  display_name = "PatchPanda: audit-log feed silent"
  combiner     = "OR"
  severity     = "CRITICAL"

  # rotation-worker's hourly finish reads every secret's metadata (logged as
  # Data Access ADMIN_READ), so the sink publishes at least hourly.
  conditions {
    display_name = "nothing published to ${google_pubsub_topic.main["audit-logs"].name} for ${var.audit_feed_max_silence}"
    condition_absent {
      filter   = "metric.type=\"pubsub.googleapis.com/topic/send_message_operation_count\" AND resource.type=\"pubsub_topic\" AND resource.labels.topic_id=\"${google_pubsub_topic.main["audit-logs"].name}\""
      duration = var.audit_feed_max_silence
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.topic_id"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **No audit entries reach audit-alerter.** The log sink `patchpanda-audit-logs` was deleted, disabled or its filter changed, its writer lost publish rights on the topic, or Data Access logging for secretmanager/cloudkms was turned off. Any of these blinds the alerter, and is what an attacker does first.

      1. `patchpanda health` — then check the sink: `gcloud logging sinks describe patchpanda-audit-logs`.
      2. Audit config: `gcloud projects get-iam-policy "$PROJECT" --format=json | jq .auditConfigs` must list secretmanager.googleapis.com and cloudkms.googleapis.com with DATA_READ.
      3. `terraform apply` restores both; then find who changed them: `gcloud logging read 'protoPayload.methodName:("SetIamPolicy" OR "UpdateSink" OR "DeleteSink")' --freshness=2d`.
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

resource "google_monitoring_alert_policy" "alerter_5xx" {
  project      = var.project
  display_name = "PatchPanda: audit-alerter answers 5xx"
  combiner     = "OR"
  severity     = "ERROR"

  conditions {
    display_name = "5xx from ${local.alerter_service} for 10 min"
    condition_threshold {
      filter          = "${local.run_requests} AND resource.labels.service_name=\"${local.alerter_service}\" AND metric.labels.response_code_class=\"5xx\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "600s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **audit-alerter keeps answering 5xx.** A 503 on /events/audit-log is deliberate while no paging sink takes an alert (Pub/Sub redelivers, nothing is lost yet); anything else is a failure.

      1. `patchpanda health --alerter-url "$PATCHPANDA_ALERTER_URL"`.
      2. Which sink or error: `gcloud logging read 'resource.labels.service_name="${local.alerter_service}" AND severity>=ERROR' --limit=20`.
      3. A refused Slack/PagerDuty credential: set the new value, bump `alert_secrets_version`, `terraform apply`.
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

# ---------------------------------------------------------------- rotations and secrets

resource "google_monitoring_alert_policy" "rotation_failed" {
  project      = var.project
  display_name = "PatchPanda: rotation failed or rolled back"
  combiner     = "OR"
  severity     = "ERROR"

  conditions {
    display_name = "failed or rolled_back rotation notice"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric.rotation_notices}\" AND resource.type=\"cloud_run_revision\" AND metric.labels.event=monitoring.regex.full_match(\"failed|rolled_back\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.secret", "metric.label.event"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **Rotation of $${metric.label.secret}: $${metric.label.event}.** The old version is still `current`, so nothing is broken now, but the secret was not rotated (for an uploaded key: the upload failed validation; for an emergency rotation: the leaked credential is still live).

      1. `patchpanda status` — the last rotation's result and its reason.
      2. Fix the reason (GitHub unreachable, App id mismatch, an RSA key under 2048 bits...), then `patchpanda rotate $${metric.label.secret}` (add `--emergency` if it was one).
      3. If the new version broke something after promotion: `patchpanda rollback $${metric.label.secret}`.
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

resource "google_monitoring_alert_policy" "secret_read_spike" {
  project      = var.project
  display_name = "PatchPanda: secret read spike"
  combiner     = "OR"
  severity     = "CRITICAL"

  conditions {
    display_name = "more than ${var.secret_read_spike} reads of one secret in 10 min"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric.secret_reads}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.secret_read_spike
      duration        = "0s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.secret"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **$${metric.label.secret} was read more than ${var.secret_read_spike} times in 10 minutes.** The functions read at start and on refresh; a crash loop reads more, and so does someone copying the secret.

      1. Who: the dashboard's "Secret value reads by principal", or `gcloud logging read 'protoPayload.methodName:"AccessSecretVersion" AND protoPayload.resourceName:"/secrets/$${metric.label.secret}/"' --freshness=1h --format='value(protoPayload.authenticationInfo.principalEmail)' | sort | uniq -c`.
      2. Only the gateway's accounts: a restart loop; `patchpanda health` and the service's logs.
      3. Anyone else: treat it as a compromise — `patchpanda rotate $${metric.label.secret} --emergency` and revoke their access (docs/runbook.md).
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

resource "google_monitoring_alert_policy" "sa_key_use" {
  project      = var.project
  display_name = "PatchPanda: gateway service account used with a key"
  combiner     = "OR"
  severity     = "CRITICAL"

  conditions {
    display_name = "call authenticated with a user-managed key"
    condition_threshold {
      filter          = "metric.type=\"${local.log_metric.sa_key_use}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.principal", "metric.label.key_id"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **$${metric.label.principal} made a call with key $${metric.label.key_id}.** The gateway runs on attached identities and has no keys: someone created one and is using it.

      1. Disable it now: `gcloud iam service-accounts keys disable $${metric.label.key_id} --iam-account=$${metric.label.principal}`.
      2. If it can read secrets (webhook-ingest, rotation-worker): `patchpanda rotate NAME --emergency` for each secret it reads, then `patchpanda status`.
      3. Find who created the key: `gcloud logging read 'protoPayload.methodName="google.iam.admin.v1.CreateServiceAccountKey"' --freshness=30d`.
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}

# ---------------------------------------------------------------- uptime

resource "google_monitoring_alert_policy" "ingest_uptime" {
  project      = var.project
  display_name = "PatchPanda: webhook-ingest /health down"
  combiner     = "OR"
  severity     = "CRITICAL"

  conditions {
    display_name = "uptime check failing from more than one region"
    condition_threshold {
      filter          = "metric.type=\"monitoring.googleapis.com/uptime_check/check_passed\" AND resource.type=\"uptime_url\" AND metric.labels.check_id=\"${google_monitoring_uptime_check_config.ingest_health.uptime_check_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 1
      duration        = "60s"
      aggregations {
        alignment_period     = "1200s"
        per_series_aligner   = "ALIGN_NEXT_OLDER"
        cross_series_reducer = "REDUCE_COUNT_FALSE"
        group_by_fields      = ["resource.label.host"]
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      **webhook-ingest's /health fails from several regions: GitHub's deliveries are failing.** GitHub does not retry; once the service is back the redelivery sweep (every 10 min, last 3 days) asks GitHub to redeliver them.

      1. `patchpanda health`.
      2. The service: `gcloud run services describe ${local.ingest_service} --region=${var.region}` (latest revision ready? traffic?), and its logs.
      3. A bad new revision: route traffic back (`gcloud run services update-traffic ${local.ingest_service} --region=${var.region} --to-revisions=PREVIOUS=100`) or apply the previous `image_tag`.
    EOT
  }

  notification_channels = local.notification_channels
  user_labels           = local.common_labels
}
