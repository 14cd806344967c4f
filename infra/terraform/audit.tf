# Cloud Audit Logs about this deployment's secrets, key and identities,
# routed to patchpanda-audit-logs (pushed to audit-alerter /events/audit-log),
# and the Data Access audit config that makes secret reads and key use
# visible at all (off by default).

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
  # name, whatever the project form (`:` is the substring operator).
  secret_clause = join(" OR ", [for id in local.watched_secret_ids : "protoPayload.resourceName:\"/secrets/${id}\""])
  account_clause = join(" OR ", concat(
    [for e in local.watched_accounts : "protoPayload.resourceName:\"${e}\""],
    [for u in local.watched_account_ids : "protoPayload.resourceName:\"${u}\""],
    [for e in local.watched_accounts : "protoPayload.request.name:\"${e}\""],
  ))

  audit_filter = join("\n", [
    "logName:\"cloudaudit.googleapis.com\"",
    "AND (",
    "  (protoPayload.serviceName=\"secretmanager.googleapis.com\" AND (${local.secret_clause}))",
    # The secrets key, everything; the Pub/Sub key only for admin changes,
    # since Pub/Sub's per-message Encrypt/Decrypt would flood the alerter.
    "  OR (protoPayload.serviceName=\"cloudkms.googleapis.com\" AND protoPayload.resourceName:\"/keyRings/${local.kms_key_ring_name}\" AND NOT (protoPayload.resourceName:\"/cryptoKeys/${google_kms_crypto_key.pubsub.name}\" AND logName:\"data_access\"))",
    "  OR ((protoPayload.serviceName=\"iam.googleapis.com\" OR protoPayload.serviceName=\"iamcredentials.googleapis.com\") AND (${local.account_clause}))",
    # Watch the watcher: project IAM/audit-config changes and this sink.
    "  OR (protoPayload.serviceName=\"cloudresourcemanager.googleapis.com\" AND protoPayload.methodName=\"SetIamPolicy\")",
    "  OR (protoPayload.serviceName=\"logging.googleapis.com\" AND protoPayload.resourceName:\"/sinks/patchpanda-audit-logs\")",
    ")",
  ])
}

resource "google_logging_project_sink" "audit" {
  project     = var.project
  name        = "patchpanda-audit-logs"
  description = "Audit logs of PatchPanda's secrets, KMS key and service accounts, for audit-alerter."
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
