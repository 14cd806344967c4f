# One Cloud Monitoring dashboard, "PatchPanda Gateway": deliveries, publish
# latency, redeliveries, rotations, alerts, dead letters, backlogs, and each
# function's instances and memory. docs/deploy.md ("Monitoring") says what
# each panel means and what to run when it looks wrong.

locals {
  # Alternations for monitoring.regex.full_match (names hold no regex
  # metacharacters).
  fn_services = join("|", values(local.service_names))
  dlq_subs    = join("|", [for s in google_pubsub_subscription.dead_letter : s.name])
  push_subs   = join("|", [for s in google_pubsub_subscription.push : s.name])

  # Each panel: a title, a y-axis label and its data sets. Every data set
  # has the same keys so the dashboard below can be built in one loop.
  dashboard_panels = [
    {
      title = "/webhook answers by status (2xx accepted, 401 signature rejected, 4xx refused, 503 not published)"
      y     = "answers / min"
      sets = [{
        filter = "metric.type=\"${local.log_metric.webhook_responses}\" AND resource.type=\"cloud_run_revision\""
        period = "60s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["metric.label.status"], plot = "STACKED_BAR"
      }]
    },
    {
      title = "Deliveries published to patchpanda-github-events, by event"
      y     = "deliveries / min"
      sets = [{
        filter = "metric.type=\"${local.log_metric.deliveries_published}\" AND resource.type=\"cloud_run_revision\""
        period = "60s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["metric.label.github_event"], plot = "STACKED_BAR"
      }]
    },
    {
      title = "/webhook latency, verify + publish (p50, p95, p99; GitHub gives up at 10 s)"
      y     = "seconds"
      sets = [for p in ["50", "95", "99"] : {
        filter = "metric.type=\"${local.log_metric.webhook_latency}\" AND resource.type=\"cloud_run_revision\""
        period = "60s", aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_${p}", group_by = ["resource.label.service_name"], plot = "LINE"
      }]
    },
    {
      title = "Signature rejections (by reason) and deliveries not published (503)"
      y     = "deliveries / min"
      sets = [
        {
          filter = "metric.type=\"${local.log_metric.signature_rejections}\" AND resource.type=\"cloud_run_revision\""
          period = "60s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["metric.label.reason"], plot = "STACKED_BAR"
        },
        {
          filter = "metric.type=\"${local.log_metric.publish_failures}\" AND resource.type=\"cloud_run_revision\""
          period = "60s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["resource.label.service_name"], plot = "LINE"
        },
      ]
    },
    {
      title = "Redeliveries requested per sweep (mean), by whether the sweep completed"
      y     = "redeliveries"
      sets = [{
        filter = "metric.type=\"${local.log_metric.redelivery_sweeps}\" AND resource.type=\"cloud_run_revision\""
        period = "600s", aligner = "ALIGN_MEAN", reducer = "REDUCE_MEAN", group_by = ["metric.label.complete"], plot = "LINE"
      }]
    },
    {
      title = "Rotation notices by outcome (rotated, promoted, failed, rolled_back, due...)"
      y     = "notices / h"
      sets = [{
        filter = "metric.type=\"${local.log_metric.rotation_notices}\" AND resource.type=\"cloud_run_revision\""
        period = "3600s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["metric.label.event"], plot = "STACKED_BAR"
      }]
    },
    {
      title = "audit-alerter alerts by rule"
      y     = "alerts / h"
      sets = [{
        filter = "metric.type=\"${local.log_metric.alerts}\" AND resource.type=\"cloud_run_revision\""
        period = "3600s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["metric.label.rule"], plot = "STACKED_BAR"
      }]
    },
    {
      title = "Dead-letter backlog (messages in each -dlq-pull; should be 0)"
      y     = "messages"
      sets = [{
        filter = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=monitoring.regex.full_match(\"${local.dlq_subs}\")"
        period = "60s", aligner = "ALIGN_MAX", reducer = "REDUCE_SUM", group_by = ["resource.label.subscription_id"], plot = "LINE"
      }]
    },
    {
      title = "Push subscriptions: oldest unacknowledged message (audit-log feed: alerts not yet delivered)"
      y     = "seconds"
      sets = [{
        filter = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=monitoring.regex.full_match(\"${local.push_subs}\")"
        period = "60s", aligner = "ALIGN_MAX", reducer = "REDUCE_MAX", group_by = ["resource.label.subscription_id"], plot = "LINE"
      }]
    },
    {
      title = "Requests by function and status class"
      y     = "requests / min"
      sets = [{
        filter = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=monitoring.regex.full_match(\"${local.fn_services}\")"
        period = "60s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["resource.label.service_name", "metric.label.response_code_class"], plot = "LINE"
      }]
    },
    {
      title = "Instances per function (active and idle)"
      y     = "instances"
      sets = [{
        filter = "metric.type=\"run.googleapis.com/container/instance_count\" AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=monitoring.regex.full_match(\"${local.fn_services}\")"
        period = "60s", aligner = "ALIGN_MAX", reducer = "REDUCE_SUM", group_by = ["resource.label.service_name", "metric.label.state"], plot = "LINE"
      }]
    },
    {
      title = "Memory utilisation per function (p99 of the 512 MiB limit)"
      y     = "fraction of limit"
      sets = [{
        filter = "metric.type=\"run.googleapis.com/container/memory/utilizations\" AND resource.type=\"cloud_run_revision\" AND resource.labels.service_name=monitoring.regex.full_match(\"${local.fn_services}\")"
        period = "60s", aligner = "ALIGN_DELTA", reducer = "REDUCE_PERCENTILE_99", group_by = ["resource.label.service_name"], plot = "LINE"
      }]
    },
    {
      title = "Secret value reads by secret and principal"
      y     = "reads / 10 min"
      sets = [{
        filter = "metric.type=\"${local.log_metric.secret_reads}\""
        period = "600s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["metric.label.secret", "metric.label.principal"], plot = "STACKED_BAR"
      }]
    },
    {
      title = "KMS Encrypt/Decrypt by key, method and principal"
      y     = "calls / 10 min"
      sets = [{
        filter = "metric.type=\"${local.log_metric.kms_crypto_ops}\""
        period = "600s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["metric.label.key", "metric.label.method", "metric.label.principal"], plot = "STACKED_BAR"
      }]
    },
    {
      title = "Denied calls on secrets and keys (PERMISSION_DENIED, UNAUTHENTICATED), by method"
      y     = "calls / 10 min"
      sets = [{
        filter = "metric.type=\"${local.log_metric.denied_calls}\""
        period = "600s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["metric.label.service", "metric.label.method"], plot = "STACKED_BAR"
      }]
    },
    {
      title = "Service-account key use by gateway accounts (should be 0)"
      y     = "calls / 10 min"
      sets = [{
        filter = "metric.type=\"${local.log_metric.sa_key_use}\""
        period = "600s", aligner = "ALIGN_DELTA", reducer = "REDUCE_SUM", group_by = ["metric.label.principal", "metric.label.key_id"], plot = "STACKED_BAR"
      }]
    },
  ]
}

resource "google_monitoring_dashboard" "gateway" {
  project = var.project
  dashboard_json = jsonencode({
    displayName = "PatchPanda Gateway"
    labels      = { patchpanda = "" }
    mosaicLayout = {
      columns = 12
      tiles = [for i, p in local.dashboard_panels : {
        xPos   = (i % 2) * 6
        yPos   = floor(i / 2) * 4
        width  = 6
        height = 4
        widget = {
          title = p.title
          xyChart = {
            dataSets = [for d in p.sets : {
              plotType   = d.plot
              targetAxis = "Y1"
              timeSeriesQuery = {
                timeSeriesFilter = {
                  filter = d.filter
                  aggregation = {
                    alignmentPeriod    = d.period
                    perSeriesAligner   = d.aligner
                    crossSeriesReducer = d.reducer
                    # Never empty: Monitoring drops an empty list, which
                    # Terraform would then show as a perpetual diff.
                    groupByFields = d.group_by
                  }
                }
              }
            }]
            yAxis = {
              label = p.y
              scale = "LINEAR"
            }
          }
        }
      }]
    }
  })

  depends_on = [google_project_service.apis]
}
