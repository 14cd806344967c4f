# Where Cloud Monitoring sends incidents: an email channel (required:
# var.notification_email), plus PagerDuty and Slack when configured. Every
# alert policy in monitoring_alerts.tf notifies all of them.
#
# These are Cloud Monitoring's own channels, separate from audit-alerter's
# sinks (secrets.tf): the policies exist to report what the alerter cannot
# report about itself (it is down, silent, or its sinks are), so they must
# not depend on it.

locals {
  pagerduty_enabled = nonsensitive(var.monitoring_pagerduty_service_key != "")
  slack_enabled     = var.monitoring_slack_channel != ""
}

resource "google_monitoring_notification_channel" "email" {
  project      = var.project
  display_name = "PatchPanda on-call (email)"
  type         = "email"
  labels = {
    email_address = var.notification_email
  }
  user_labels = local.common_labels

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_notification_channel" "pagerduty" {
  count        = local.pagerduty_enabled ? 1 : 0
  project      = var.project
  display_name = "PatchPanda on-call (PagerDuty)"
  type         = "pagerduty"
  user_labels  = local.common_labels

  # Hidden from plan output; Cloud Monitoring's API has no write-only form,
  # so the key is in state (docs/deploy.md).
  sensitive_labels {
    service_key = var.monitoring_pagerduty_service_key
  }

  depends_on = [google_project_service.apis]
}

resource "google_monitoring_notification_channel" "slack" {
  count        = local.slack_enabled ? 1 : 0
  project      = var.project
  display_name = "PatchPanda on-call (Slack ${var.monitoring_slack_channel})"
  type         = "slack"
  labels = {
    channel_name = var.monitoring_slack_channel
  }
  user_labels = local.common_labels

  sensitive_labels {
    auth_token = var.monitoring_slack_auth_token
  }

  lifecycle {
    precondition {
      condition     = nonsensitive(var.monitoring_slack_auth_token != "")
      error_message = "monitoring_slack_channel is set but monitoring_slack_auth_token is empty: Cloud Monitoring needs the Slack app's OAuth token to post."
    }
  }

  depends_on = [google_project_service.apis]
}

locals {
  notification_channels = concat(
    [google_monitoring_notification_channel.email.id],
    [for c in google_monitoring_notification_channel.pagerduty : c.id],
    [for c in google_monitoring_notification_channel.slack : c.id],
  )
}
