# Log-based metrics (metric type logging.googleapis.com/user/NAME): what the
# gateway's own log lines and Google's audit entries say, counted so alert
# policies and the dashboard can use them. docs/deploy.md ("Monitoring")
# says what each means.
#
# Application lines come from tracing-stackdriver on stdout: the message in
# jsonPayload.message, each field in jsonPayload under its camelCase name
# (`github_event` -> githubEvent, `alert.rule` -> alertRule).
#
# Labels are kept to small, closed sets or to identities that IAM already
# bounds: never a value an unauthenticated caller chooses (a remote IP, a
# delivery id), which would let anyone mint time series.

locals {
  # Application log lines of one function.
  app_log = {
    for f, n in local.service_names : f => join(" AND ", [
      "resource.type=\"cloud_run_revision\"",
      "resource.labels.service_name=\"${n}\"",
      "(logName:\"run.googleapis.com%2Fstdout\" OR logName:\"run.googleapis.com%2Fstderr\")",
    ])
  }
  # Cloud Run's own request log of webhook-ingest's /webhook route (GitHub's
  # deliveries; /tasks and /events are other routes of the same service).
  webhook_request_log = join(" AND ", [
    "resource.type=\"cloud_run_revision\"",
    "resource.labels.service_name=\"${local.service_names["webhook-ingest"]}\"",
    "logName:\"run.googleapis.com%2Frequests\"",
    "httpRequest.requestUrl=~\"^https://[^/]+/webhook([?].*)?$\"",
  ])
  # A successful call: an audit entry's status is empty (or code 0) then.
  audit_ok = "(NOT protoPayload.status.code:* OR protoPayload.status.code=0)"
}

resource "google_logging_metric" "signature_rejections" {
  project     = var.project
  name        = "patchpanda/signature_rejections"
  description = "Deliveries webhook-ingest refused because X-Hub-Signature-256 matched no valid webhook secret (its `signature_rejected` log line), by reason."
  filter      = "${local.app_log["webhook-ingest"]} AND jsonPayload.event=\"signature_rejected\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda webhook signature rejections"
    labels {
      key         = "reason"
      value_type  = "STRING"
      description = "Why the signature was refused (e.g. mismatch)."
    }
  }
  label_extractors = {
    reason = "EXTRACT(jsonPayload.reason)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "publish_failures" {
  project     = var.project
  name        = "patchpanda/publish_failures"
  description = "Verified deliveries webhook-ingest could not publish to patchpanda-github-events (it answered 503; GitHub does not retry, the redelivery sweep asks it to)."
  filter      = "${local.app_log["webhook-ingest"]} AND jsonPayload.message=\"request failed\" AND jsonPayload.status=503 AND jsonPayload.error:\"publish\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda deliveries not published (503)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "deliveries_published" {
  project     = var.project
  name        = "patchpanda/deliveries_published"
  description = "Deliveries webhook-ingest published to patchpanda-github-events, by GitHub event (only after the signature checked, so the event names are the App's)."
  filter      = "${local.app_log["webhook-ingest"]} AND jsonPayload.message=\"delivery published\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda deliveries published"
    labels {
      key         = "github_event"
      value_type  = "STRING"
      description = "X-GitHub-Event of the delivery."
    }
  }
  label_extractors = {
    github_event = "EXTRACT(jsonPayload.githubEvent)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "webhook_responses" {
  project     = var.project
  name        = "patchpanda/webhook_responses"
  description = "webhook-ingest's answers on /webhook (Cloud Run request log), by HTTP status: 202/200 accepted, 401 signature rejected, 4xx other refusals, 503 not published."
  filter      = local.webhook_request_log

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda /webhook responses"
    labels {
      key         = "status"
      value_type  = "STRING"
      description = "HTTP status answered."
    }
  }
  label_extractors = {
    status = "EXTRACT(httpRequest.status)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "webhook_latency" {
  project     = var.project
  name        = "patchpanda/webhook_latency"
  description = "Time webhook-ingest took to answer a delivery on /webhook (verify + publish), from Cloud Run's request log. GitHub gives up after 10 s."
  filter      = local.webhook_request_log

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "s"
    display_name = "PatchPanda /webhook latency"
  }
  # httpRequest.latency is a duration, rendered as a string like "0.123456s"
  # before the regex applies.
  value_extractor = "REGEXP_EXTRACT(httpRequest.latency, \"^([0-9.]+)s$\")"
  bucket_options {
    # 1 ms .. ~38 s: 26 buckets, each 1.5 times the last.
    exponential_buckets {
      num_finite_buckets = 26
      growth_factor      = 1.5
      scale              = 0.001
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "redelivery_sweeps" {
  project     = var.project
  name        = "patchpanda/redelivery_sweeps"
  description = "Redelivery requests webhook-ingest's sweeper made to GitHub per sweep (its `redelivery sweep done` line, field redelivered), by whether the sweep saw everything."
  filter      = "${local.app_log["webhook-ingest"]} AND jsonPayload.message=\"redelivery sweep done\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "PatchPanda redeliveries requested per sweep"
    labels {
      key         = "complete"
      value_type  = "STRING"
      description = "false when the sweep stopped early (rate limit, errors) and the next one looks further back."
    }
  }
  value_extractor = "EXTRACT(jsonPayload.redelivered)"
  label_extractors = {
    complete = "EXTRACT(jsonPayload.complete)"
  }
  bucket_options {
    explicit_buckets {
      bounds = [0.5, 1.5, 5, 10, 25, 50, 100, 250, 1000]
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "rotation_notices" {
  project     = var.project
  name        = "patchpanda/rotation_notices"
  description = "Rotation notices rotation-worker published on patchpanda-rotation-events, by event (started, rotated, promoted, rolled_back, failed, due, disabled, destroyed) and secret."
  filter      = "${local.app_log["rotation-worker"]} AND jsonPayload.message=\"rotation notice published\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda rotation notices"
    labels {
      key         = "event"
      value_type  = "STRING"
      description = "Notice event."
    }
    labels {
      key         = "secret"
      value_type  = "STRING"
      description = "Logical secret name."
    }
  }
  label_extractors = {
    event  = "EXTRACT(jsonPayload.event)"
    secret = "EXTRACT(jsonPayload.secret)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "alerts" {
  project     = var.project
  name        = "patchpanda/alerts"
  description = "Alerts audit-alerter raised (its structured log sink writes every alert before any other sink), by rule and severity."
  filter      = "${local.app_log["audit-alerter"]} AND jsonPayload.alertRule:*"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda alerts"
    labels {
      key         = "rule"
      value_type  = "STRING"
      description = "audit-alerter rule id."
    }
    labels {
      key         = "severity"
      value_type  = "STRING"
      description = "P0 .. P3."
    }
  }
  label_extractors = {
    rule     = "EXTRACT(jsonPayload.alertRule)"
    severity = "EXTRACT(jsonPayload.alertSeverity)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "secret_reads" {
  project     = var.project
  name        = "patchpanda/secret_reads"
  description = "Successful reads of a PatchPanda secret's value (AccessSecretVersion, any API version; a Data Access entry), by secret and principal."
  filter = join(" AND ", [
    "logName:\"cloudaudit.googleapis.com%2Fdata_access\"",
    "protoPayload.serviceName=\"secretmanager.googleapis.com\"",
    "protoPayload.methodName:\"AccessSecretVersion\"",
    "protoPayload.resourceName:\"/secrets/${local.secret_prefix}\"",
    local.audit_ok,
  ])

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda secret value reads"
    labels {
      key         = "secret"
      value_type  = "STRING"
      description = "Secret id."
    }
    labels {
      key         = "principal"
      value_type  = "STRING"
      description = "authenticationInfo.principalEmail (only principals IAM lets read succeed)."
    }
  }
  label_extractors = {
    secret    = "REGEXP_EXTRACT(protoPayload.resourceName, \"/secrets/([^/]+)\")"
    principal = "EXTRACT(protoPayload.authenticationInfo.principalEmail)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "kms_crypto_ops" {
  project     = var.project
  name        = "patchpanda/kms_crypto_ops"
  description = "Encrypt and Decrypt calls on the PatchPanda key ring's keys (Data Access entries), by key, method and principal. On the secrets key the Secret Manager service agent is the expected caller (CMEK); rotation-worker's test round trip and `patchpanda backup/restore` add a few."
  filter = join(" AND ", [
    "logName:\"cloudaudit.googleapis.com%2Fdata_access\"",
    "protoPayload.serviceName=\"cloudkms.googleapis.com\"",
    "(protoPayload.methodName=\"Encrypt\" OR protoPayload.methodName=\"Decrypt\")",
    "protoPayload.resourceName:\"/keyRings/${local.kms_key_ring_name}/\"",
  ])

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda KMS encrypt/decrypt"
    labels {
      key         = "key"
      value_type  = "STRING"
      description = "Crypto key id."
    }
    labels {
      key         = "method"
      value_type  = "STRING"
      description = "Encrypt or Decrypt."
    }
    labels {
      key         = "principal"
      value_type  = "STRING"
      description = "authenticationInfo.principalEmail."
    }
  }
  label_extractors = {
    key       = "REGEXP_EXTRACT(protoPayload.resourceName, \"/cryptoKeys/([^/]+)\")"
    method    = "EXTRACT(protoPayload.methodName)"
    principal = "EXTRACT(protoPayload.authenticationInfo.principalEmail)"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "sa_key_use" {
  project     = var.project
  name        = "patchpanda/sa_key_use"
  description = "Calls made by a PatchPanda service account authenticated with a user-managed key (authenticationInfo.serviceAccountKeyName set). The gateway uses no keys: any count is a key someone created and used."
  filter = join(" AND ", [
    "logName:\"cloudaudit.googleapis.com\"",
    "protoPayload.authenticationInfo.serviceAccountKeyName:*",
    "(${local.key_clause})",
  ])

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda service-account key use"
    labels {
      key         = "principal"
      value_type  = "STRING"
      description = "The gateway account the key belongs to."
    }
    labels {
      key         = "key_id"
      value_type  = "STRING"
      description = "The key's id (last segment of serviceAccountKeyName)."
    }
  }
  label_extractors = {
    principal = "EXTRACT(protoPayload.authenticationInfo.principalEmail)"
    key_id    = "REGEXP_EXTRACT(protoPayload.authenticationInfo.serviceAccountKeyName, \"/keys/([^/]+)$\")"
  }

  depends_on = [google_project_service.apis]
}

resource "google_logging_metric" "denied_calls" {
  project     = var.project
  name        = "patchpanda/denied_calls"
  description = "Calls on the PatchPanda secrets or key ring that Google refused (PERMISSION_DENIED or UNAUTHENTICATED in the audit entry): someone trying credentials or grants they do not have. By service and method, not by caller: any Google account can be refused, so a caller label would let anyone mint time series (audit-alerter names the callers)."
  filter = join(" AND ", [
    "logName:\"cloudaudit.googleapis.com\"",
    "(protoPayload.status.code=7 OR protoPayload.status.code=16)",
    "((protoPayload.serviceName=\"secretmanager.googleapis.com\" AND protoPayload.resourceName:\"/secrets/${local.secret_prefix}\") OR (protoPayload.serviceName=\"cloudkms.googleapis.com\" AND protoPayload.resourceName:\"/keyRings/${local.kms_key_ring_name}/\"))",
  ])

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "PatchPanda denied calls on secrets and keys"
    labels {
      key         = "service"
      value_type  = "STRING"
      description = "secretmanager.googleapis.com or cloudkms.googleapis.com."
    }
    labels {
      key         = "method"
      value_type  = "STRING"
      description = "The refused method (a closed set per API)."
    }
  }
  label_extractors = {
    service = "EXTRACT(protoPayload.serviceName)"
    method  = "EXTRACT(protoPayload.methodName)"
  }

  depends_on = [google_project_service.apis]
}

locals {
  # metric.type of each log-based metric, for the policies and the dashboard.
  log_metric = {
    signature_rejections = "logging.googleapis.com/user/${google_logging_metric.signature_rejections.name}"
    publish_failures     = "logging.googleapis.com/user/${google_logging_metric.publish_failures.name}"
    deliveries_published = "logging.googleapis.com/user/${google_logging_metric.deliveries_published.name}"
    webhook_responses    = "logging.googleapis.com/user/${google_logging_metric.webhook_responses.name}"
    webhook_latency      = "logging.googleapis.com/user/${google_logging_metric.webhook_latency.name}"
    redelivery_sweeps    = "logging.googleapis.com/user/${google_logging_metric.redelivery_sweeps.name}"
    rotation_notices     = "logging.googleapis.com/user/${google_logging_metric.rotation_notices.name}"
    alerts               = "logging.googleapis.com/user/${google_logging_metric.alerts.name}"
    secret_reads         = "logging.googleapis.com/user/${google_logging_metric.secret_reads.name}"
    kms_crypto_ops       = "logging.googleapis.com/user/${google_logging_metric.kms_crypto_ops.name}"
    sa_key_use           = "logging.googleapis.com/user/${google_logging_metric.sa_key_use.name}"
    denied_calls         = "logging.googleapis.com/user/${google_logging_metric.denied_calls.name}"
  }
}
