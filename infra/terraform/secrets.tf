# The App's secrets (docs/design.md, Names). Terraform creates the containers and
# their policy; values are added by operators (`patchpanda secrets add`) and
# by the rotation-worker, never by Terraform, so no App credential is ever in
# the state file.

resource "google_secret_manager_secret" "app" {
  for_each  = toset(local.app_secrets)
  project   = var.project
  secret_id = "${local.secret_prefix}${each.key}"
  labels    = merge(local.common_labels, { logical-name = each.key })

  # CMEK needs user-managed replication: the key is regional, and the replica
  # must sit where the key does.
  replication {
    user_managed {
      replicas {
        location = var.region
        customer_managed_encryption {
          kms_key_name = google_kms_crypto_key.secrets.id
        }
      }
    }
  }

  # Every change to the secret (and SECRET_ROTATE when it is due) is
  # published here; the topic is pushed to rotation-worker.
  topics {
    name = google_pubsub_topic.main["secret-events"].id
  }

  rotation {
    rotation_period    = var.secret_rotation_periods[each.key]
    next_rotation_time = timeadd(plantimestamp(), var.secret_rotation_periods[each.key])
  }

  # Delayed destruction: DestroySecretVersion (by rotation-worker's finish
  # after retention, by `patchpanda secrets destroy`, or by an attacker)
  # only disables the version and schedules its destruction this far out;
  # until then enabling (or disabling) it cancels the destruction
  # (docs/runbook.md). Deleting the whole secret is not delayed: that is
  # what audit-alerter's DeleteSecret alert and IAM (no delete permission
  # in any gateway role) are for.
  version_destroy_ttl = var.secret_version_destroy_ttl

  lifecycle {
    # Secret Manager moves next_rotation_time forward by itself at each
    # rotation notice, and the rotation-worker owns the aliases
    # (current/previous/pending) and its annotations. Terraform must not
    # undo either on the next apply.
    ignore_changes = [
      rotation[0].next_rotation_time,
      version_aliases,
      annotations,
    ]
  }

  depends_on = [
    google_kms_crypto_key_iam_member.secretmanager_agent,
    google_pubsub_topic_iam_member.secretmanager_agent_publishes_secret_events,
  ]
}

# ---------------------------------------------------------------- access

resource "google_secret_manager_secret_iam_member" "ingest_reads" {
  for_each  = toset(local.ingest_secrets)
  project   = var.project
  secret_id = google_secret_manager_secret.app[each.key].secret_id
  role      = google_project_iam_custom_role.secret_reader.id
  member    = "serviceAccount:${google_service_account.fn["webhook-ingest"].email}"
}

resource "google_secret_manager_secret_iam_member" "worker_rotates" {
  for_each  = toset(local.app_secrets)
  project   = var.project
  secret_id = google_secret_manager_secret.app[each.key].secret_id
  role      = google_project_iam_custom_role.secret_rotator.id
  member    = "serviceAccount:${google_service_account.fn["rotation-worker"].email}"
}

# ---------------------------------------------------------------- alert sinks
# The Slack webhook URL, the PagerDuty routing key and the generic webhook's
# signing key are credentials: anyone holding them can post to the channel,
# open incidents or forge alerts. They live in Secret
# Manager (write-only from Terraform: never in state), readable only by
# audit-alerter, and reach it through Cloud Run's secret env mounting, pinned
# to the version Terraform wrote so a new value rolls out as a new revision.

locals {
  alert_secrets = {
    slack = {
      id      = "${local.secret_prefix}alert-slack-webhook-url"
      env     = "PATCHPANDA_ALERT_SLACK_WEBHOOK_URL"
      enabled = nonsensitive(var.alert_slack_webhook_url != "")
    }
    pagerduty = {
      id      = "${local.secret_prefix}alert-pagerduty-routing-key"
      env     = "PATCHPANDA_ALERT_PAGERDUTY_ROUTING_KEY"
      enabled = nonsensitive(var.alert_pagerduty_routing_key != "")
    }
    # HMAC key that signs the generic webhook's body.
    webhook = {
      id      = "${local.secret_prefix}alert-webhook-signing-secret"
      env     = "PATCHPANDA_ALERT_WEBHOOK_SECRET"
      enabled = nonsensitive(var.alert_webhook_signing_secret != "")
    }
  }
  alert_secret_values = {
    slack     = var.alert_slack_webhook_url
    pagerduty = var.alert_pagerduty_routing_key
    webhook   = var.alert_webhook_signing_secret
  }
  alert_secrets_enabled = { for k, v in local.alert_secrets : k => v if v.enabled }
}

resource "google_secret_manager_secret" "alert" {
  for_each  = local.alert_secrets_enabled
  project   = var.project
  secret_id = each.value.id
  labels    = merge(local.common_labels, { purpose = "alert-sink" })

  replication {
    user_managed {
      replicas {
        location = var.region
        customer_managed_encryption {
          kms_key_name = google_kms_crypto_key.secrets.id
        }
      }
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.secretmanager_agent]
}

resource "google_secret_manager_secret_version" "alert" {
  for_each               = local.alert_secrets_enabled
  secret                 = google_secret_manager_secret.alert[each.key].id
  secret_data_wo         = local.alert_secret_values[each.key]
  secret_data_wo_version = var.alert_secrets_version
}

resource "google_secret_manager_secret_iam_member" "alerter_reads_sinks" {
  for_each  = local.alert_secrets_enabled
  project   = var.project
  secret_id = google_secret_manager_secret.alert[each.key].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn["audit-alerter"].email}"
}
