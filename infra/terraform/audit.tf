# Cloud Audit Logs about this deployment's secrets, key, identities and its
# own plumbing (services, topics, subscriptions, jobs, this sink, the
# project's audit config), plus webhook-ingest's signature rejections,
# routed to patchpanda-audit-logs (pushed to audit-alerter
# /events/audit-log); and the Data Access audit config that makes secret
# reads, key use and token minting visible at all (off by default).

locals {
  watched_secret_ids = [for s in local.app_secrets : "${local.secret_prefix}${s}"]
  watched_accounts = concat(
    [for sa in google_service_account.fn : sa.email],
    [google_service_account.push.email, google_service_account.scheduler.email],
  )
  watched_account_ids = concat(
    [for sa in google_service_account.fn : sa.unique_id],
    [google_service_account.push.unique_id, google_service_account.scheduler.unique_id],
  )

  # Secret Manager entries often name the project by number, KMS by id, IAM
  # by account unique id or email: match the stable tail of each resource
  # name, whatever the project form (`:` is the substring operator). Secret
  # Manager's v1, v1beta1 and v1beta2 methods all log serviceName
  # secretmanager.googleapis.com and the same resource names, so the
  # service + resource clauses cover every API version; audit-alerter tells
  # the methods apart by their last segment.
  secret_clause = join(" OR ", concat(
    [for id in local.watched_secret_ids : "protoPayload.resourceName:\"/secrets/${id}\""],
    # CreateSecret's resource is the project; the new id is in the request.
    [for id in local.watched_secret_ids : "protoPayload.request.secretId=\"${id}\""],
  ))
  account_clause = join(" OR ", concat(
    [for e in local.watched_accounts : "protoPayload.resourceName:\"${e}\""],
    [for u in local.watched_account_ids : "protoPayload.resourceName:\"${u}\""],
    [for e in local.watched_accounts : "protoPayload.request.name:\"${e}\""],
    # The custom roles the gateway's grants use: a permission added to one
    # widens every grant of it.
    ["protoPayload.resourceName:\"/roles/patchpanda\""],
  ))
  # Anything a gateway account does with a user-managed key (the gateway
  # uses none), whatever it touches.
  key_clause = join(" OR ", [for e in local.watched_accounts : "protoPayload.authenticationInfo.principalEmail=\"${e}\""])
  # The gateway's Cloud Run services: v2 names them
  # projects/P/locations/R/services/NAME, v1 namespaces/P/services/NAME;
  # revisions are named NAME-NNNNN-xyz.
  pubsub_clause = "protoPayload.resourceName:\"/subscriptions/patchpanda-\" OR protoPayload.resourceName:\"/topics/patchpanda-\""
  run_clause = join(" OR ", concat(
    [for n in values(local.service_names) : "protoPayload.resourceName:\"/services/${n}\""],
    [for n in values(local.service_names) : "protoPayload.resourceName:\"/revisions/${n}-\""],
  ))

  # The four log ids only Cloud Audit Logs writes, by exact name: `logName:`
  # is a substring match, and anyone allowed to write log entries could name
  # a log `x-cloudaudit.googleapis.com%2Fdata_access` (docs/gcp-behavior.md,
  # Cloud Audit Logs). The alerter checks the same ids again.
  audit_log_names = { for id in ["activity", "data_access", "system_event", "policy"] :
    id => "projects/${var.project}/logs/cloudaudit.googleapis.com%2F${id}"
  }
  audit_log_clause = join(" OR ", [for n in values(local.audit_log_names) : "logName=\"${n}\""])

  # Cloud Logging's query language binds OR tighter than AND: every clause
  # below is parenthesised on purpose.
  audit_filter = join("\n", [
    "(",
    "(${local.audit_log_clause})",
    "AND (",
    "  (protoPayload.serviceName=\"secretmanager.googleapis.com\" AND (${local.secret_clause}))",
    # The secrets key, everything (import, update, Encrypt/Decrypt by anyone,
    # version changes). The Pub/Sub key likewise, except the Pub/Sub service
    # agent's own per-message Encrypt/Decrypt, which would flood the alerter.
    "  OR (protoPayload.serviceName=\"cloudkms.googleapis.com\" AND protoPayload.resourceName:\"/keyRings/${local.kms_key_ring_name}\" AND NOT (protoPayload.resourceName:\"/cryptoKeys/${google_kms_crypto_key.pubsub.name}\" AND logName:\"data_access\" AND protoPayload.authenticationInfo.principalEmail=\"${google_project_service_identity.pubsub.email}\"))",
    "  OR ((protoPayload.serviceName=\"iam.googleapis.com\" OR protoPayload.serviceName=\"iamcredentials.googleapis.com\") AND (${local.account_clause}))",
    "  OR (protoPayload.authenticationInfo.serviceAccountKeyName:* AND (${local.key_clause}))",
    # Watch the watcher. Project IAM policy changes (grants, and auditConfigs:
    # Data Access logging turned off), all of them: a project-level grant
    # reaches the gateway's secrets and key too.
    "  OR (protoPayload.serviceName=\"cloudresourcemanager.googleapis.com\" AND protoPayload.methodName:\"SetIamPolicy\")",
    # This sink (google.logging.v2.ConfigServiceV2.UpdateSink/DeleteSink...).
    "  OR (protoPayload.serviceName=\"logging.googleapis.com\" AND protoPayload.resourceName:\"/sinks/patchpanda-audit-logs\")",
    # Changes only (Admin Activity): Cloud Run services and revisions (a new
    # revision can change the env that configures the rules), the gateway's
    # topics and subscriptions (push endpoint, detach, delete, IAM), and its
    # Cloud Scheduler jobs (the alerter's tick).
    "  OR (logName=\"${local.audit_log_names["activity"]}\" AND (",
    "    (protoPayload.serviceName=\"run.googleapis.com\" AND (${local.run_clause}))",
    "    OR (protoPayload.serviceName=\"pubsub.googleapis.com\" AND (${local.pubsub_clause}))",
    "    OR (protoPayload.serviceName=\"cloudscheduler.googleapis.com\" AND protoPayload.resourceName:\"/jobs/patchpanda-\")",
    "  ))",
    # Seek is ADMIN_READ (a Data Access entry, see the pubsub audit config
    # below), yet seeking a subscription forward acknowledges everything
    # before that time: on the audit feed it silently drops entries.
    "  OR (protoPayload.serviceName=\"pubsub.googleapis.com\" AND protoPayload.methodName:\"Seek\" AND (${local.pubsub_clause}))",
    ")",
    ")",
    # webhook-ingest's rejected signatures (application log lines, not audit
    # entries): tracing-stackdriver writes the fields into jsonPayload in
    # camelCase (event, reason, delivery, remoteIp).
    "OR (",
    "resource.type=\"cloud_run_revision\"",
    "AND resource.labels.service_name=\"${local.service_names["webhook-ingest"]}\"",
    "AND (logName:\"run.googleapis.com%2Fstdout\" OR logName:\"run.googleapis.com%2Fstderr\")",
    "AND jsonPayload.event=\"signature_rejected\"",
    ")",
  ])
}

resource "google_logging_project_sink" "audit" {
  project     = var.project
  name        = "patchpanda-audit-logs"
  description = "Audit logs of PatchPanda's secrets, KMS keys, service accounts and plumbing, and webhook-ingest's signature rejections, for audit-alerter."
  destination = "pubsub.googleapis.com/${google_pubsub_topic.main["audit-logs"].id}"
  filter      = local.audit_filter
  # Its own writer identity, granted publish on this one topic only.
  unique_writer_identity = true

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_topic_iam_member" "sink_publishes" {
  project = var.project
  topic   = google_pubsub_topic.main["audit-logs"].name
  role    = "roles/pubsub.publisher"
  member  = google_logging_project_sink.audit.writer_identity
}

# ---------------------------------------------------------------- Data Access logs
#
# CAVEAT: google_project_iam_audit_config is AUTHORITATIVE PER SERVICE. For
# each service below it replaces whatever audit config the project already
# has for that service (log types and exempted members), e.g. one set by an
# organization-wide baseline or another Terraform stack; applying it removes
# theirs, and destroying it turns Data Access logs off for the service.
# Manage each service's config in exactly one place (docs/deploy.md).
# Reads of secret values (AccessSecretVersion) and KMS Encrypt/Decrypt are
# Data Access entries, so without this the alerter is blind to them. No
# member is exempted: an exemption is a blind spot an attacker would want.

resource "google_project_iam_audit_config" "secretmanager" {
  project = var.project
  service = "secretmanager.googleapis.com"

  audit_log_config {
    log_type = "ADMIN_READ"
  }
  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}

resource "google_project_iam_audit_config" "cloudkms" {
  project = var.project
  service = "cloudkms.googleapis.com"

  audit_log_config {
    log_type = "ADMIN_READ"
  }
  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}

# Token minting (iamcredentials GenerateAccessToken, SignJwt...) is logged
# only through iam.googleapis.com's Data Access config.
resource "google_project_iam_audit_config" "iam" {
  count   = var.enable_iam_data_access_logs ? 1 : 0
  project = var.project
  service = "iam.googleapis.com"

  audit_log_config {
    log_type = "ADMIN_READ"
  }
  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}

# Pub/Sub writes no Data Access entries for Publish, Pull or Acknowledge, so
# its Data Access config costs little: ADMIN_READ logs reads of topic and
# subscription metadata and, the reason it is here, Seek, which can skip a
# subscription's backlog (the sink forwards Seek on the gateway's
# subscriptions). Authoritative for pubsub.googleapis.com like the others.
resource "google_project_iam_audit_config" "pubsub" {
  count   = var.enable_pubsub_admin_read_logs ? 1 : 0
  project = var.project
  service = "pubsub.googleapis.com"

  audit_log_config {
    log_type = "ADMIN_READ"
  }
}
