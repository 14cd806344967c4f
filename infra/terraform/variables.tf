variable "project" {
  description = "Project id to deploy into."
  type        = string
}

variable "region" {
  description = "Region of Cloud Run, Cloud Scheduler, the KMS key ring and the secret replicas. The CMEK key must live where the replicas do, so one value drives all of them."
  type        = string
  default     = "us-central1"
}

# ---------------------------------------------------------------- images

variable "image_registry" {
  description = "Registry path the images live under, e.g. us-central1-docker.pkg.dev/PROJECT/patchpanda. Empty = the Artifact Registry repository this module creates."
  type        = string
  default     = ""
}

variable "image_tag" {
  description = "Tag of the images to run, e.g. the git commit SHA they were built from. The repository this module creates has immutable tags, so a tag always names one image (and `latest` can be pushed only once)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a Docker tag (letters, digits, _ . -; at most 128 characters)."
  }
}

variable "images" {
  description = "Full image references per function, overriding image_registry/image_tag, e.g. { webhook-ingest = \"...@sha256:...\" }."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.images) : contains(["webhook-ingest", "rotation-worker", "audit-alerter"], k)])
    error_message = "images keys must be webhook-ingest, rotation-worker or audit-alerter."
  }
}

# ---------------------------------------------------------------- GitHub App

variable "github_app_id" {
  description = "The GitHub App's numeric id (or client id Iv...). Empty disables the redelivery sweep."
  type        = string
  default     = ""

  validation {
    condition     = var.github_app_id == "" || can(regex("^([0-9]+|Iv[A-Za-z0-9.]+)$", var.github_app_id))
    error_message = "github_app_id must be the App's numeric id or its client id (Iv...)."
  }
}

variable "github_api_url" {
  description = "GitHub REST base URL (GitHub Enterprise Server: https://HOST/api/v3)."
  type        = string
  default     = "https://api.github.com"
}

variable "enable_oidc_client_secret" {
  description = "Create the optional patchpanda-oidc-client-secret secret."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------- services

variable "webhook_min_instances" {
  description = "Warm instances of webhook-ingest. 1 keeps GitHub's 10 s delivery timeout far from any cold start; 0 saves money."
  type        = number
  default     = 1
}

variable "alerter_min_instances" {
  description = "Warm instances of audit-alerter (its maximum is 1). 1 keeps its in-memory rotation windows, dedup and spike counters through quiet spells; its timers run from the every-minute Cloud Scheduler tick either way, and undelivered alerts and held changes survive a restart because they are nacked back to Pub/Sub. 0 saves the idle instance."
  type        = number
  default     = 1

  validation {
    condition     = contains([0, 1], var.alerter_min_instances)
    error_message = "alerter_min_instances must be 0 or 1 (audit-alerter runs at most one instance)."
  }
}

variable "max_instances" {
  description = "Upper bound of instances for webhook-ingest and audit-alerter."
  type        = number
  default     = 10
}

variable "private_ingress" {
  description = "Ingress of rotation-worker and audit-alerter. INGRESS_TRAFFIC_INTERNAL_ONLY still admits Pub/Sub push and Cloud Scheduler of this project, but blocks operators calling /rotate or `patchpanda health` from outside Google's network; IAM (run.invoker) and in-process OIDC checks gate both settings."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.private_ingress)
    error_message = "private_ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "operator_members" {
  description = "IAM members (user:..., group:..., serviceAccount:...) allowed to call the private services, e.g. `patchpanda rotate` with an OIDC token. Their emails are also added to PATCHPANDA_PUSH_SERVICE_ACCOUNTS (groups cannot be, so list users or service accounts)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.operator_members : can(regex("^(user|serviceAccount|group):[^@]+@[^@]+$", m))])
    error_message = "operator_members entries look like user:alice@example.com or serviceAccount:ci@PROJECT.iam.gserviceaccount.com."
  }
}

variable "extra_reader_principals" {
  description = "Emails besides the functions' own that may read secret values without an alert (PATCHPANDA_READER_PRINCIPALS)."
  type        = list(string)
  default     = []
}

variable "extra_rotator_principals" {
  description = "Emails besides the rotation-worker's that may change versions and aliases without an alert (PATCHPANDA_ROTATOR_PRINCIPALS)."
  type        = list(string)
  default     = []
}

variable "rotation_grace" {
  description = "PATCHPANDA_ROTATION_GRACE: how long `previous` stays valid after a rotation."
  type        = string
  default     = "1h"
}

variable "ordering" {
  description = "PATCHPANDA_ORDERING: `repository` publishes GitHub events with an ordering key, `off` does not."
  type        = string
  default     = "off"

  validation {
    condition     = contains(["off", "repository"], var.ordering)
    error_message = "ordering must be off or repository."
  }
}

variable "debug" {
  description = "DEBUG=true on every function (readable, verbose logs)."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Cloud Run deletion protection. Set false and apply before `terraform destroy`."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every labelable resource."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- rotation

variable "secret_rotation_periods" {
  description = "Secret Manager rotation period per logical secret (seconds, >= 3600s). At each period Secret Manager publishes SECRET_ROTATE to patchpanda-secret-events, which is pushed to rotation-worker."
  type        = map(string)
  default = {
    "webhook-secret"     = "7776000s"  # 90 days
    "github-private-key" = "31536000s" # 365 days: a human uploads the new key, the worker reminds
    "oidc-client-secret" = "15552000s" # 180 days
  }

  validation {
    condition     = alltrue([for p in values(var.secret_rotation_periods) : can(regex("^[0-9]+s$", p)) && try(tonumber(trimsuffix(p, "s")) >= 3600, false)])
    error_message = "Each rotation period is a number of seconds like \"7776000s\", at least 3600s."
  }
}

variable "rotation_due_check_schedule" {
  description = "Cron (UTC) of the daily due-check job (rotation-worker /tasks/due-check: announces secrets that are due)."
  type        = string
  default     = "17 3 * * *"
}

variable "scheduled_rotations" {
  description = "Optional forced rotations on a fixed cron (UTC), by logical secret, e.g. { \"webhook-secret\" = \"0 4 1 * *\" }: each gets a job posting {\"secret\": NAME, \"emergency\": false} to rotation-worker /rotate. Normally unneeded: secret_rotation_periods already triggers rotations through SECRET_ROTATE."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.scheduled_rotations) : contains(["webhook-secret", "github-private-key", "oidc-client-secret", "kms-key"], k)])
    error_message = "scheduled_rotations keys are logical names: webhook-secret, github-private-key, oidc-client-secret or kms-key."
  }
}

variable "kms_rotation_period" {
  description = "Automatic rotation period of the Cloud KMS keys (CIS asks for <= 90 days)."
  type        = string
  default     = "7776000s"
}

variable "kms_protection_level" {
  description = "SOFTWARE or HSM."
  type        = string
  default     = "SOFTWARE"

  validation {
    condition     = contains(["SOFTWARE", "HSM"], var.kms_protection_level)
    error_message = "kms_protection_level must be SOFTWARE or HSM."
  }
}

# ---------------------------------------------------------------- Pub/Sub

variable "github_events_push_endpoints" {
  description = "Extra HTTPS endpoints that patchpanda-github-events is pushed to (with the push service account's OIDC token); the pull subscription patchpanda-github-events-pull always exists."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for u in var.github_events_push_endpoints : startswith(u, "https://")])
    error_message = "Push endpoints must be https:// URLs."
  }
}

variable "enable_iam_data_access_logs" {
  description = "Data Access logs for iam.googleapis.com: the only way token minting for the gateway's accounts (iamcredentials GenerateAccessToken / GenerateIdToken / SignJwt / SignBlob) is logged at all, so audit-alerter's token-minted rule is blind without it. On by default; turn off only if another owner enables it (the audit config is authoritative per service, docs/deploy.md) or the project's IAM Data Access volume is unaffordable, knowing that impersonation by token minting then goes unseen."
  type        = bool
  default     = true
}

variable "enable_pubsub_admin_read_logs" {
  description = "ADMIN_READ Data Access logs for pubsub.googleapis.com, the only log of a Seek (which can acknowledge a subscription's whole backlog, e.g. the audit feed's). Pub/Sub logs no message operations, so the volume is small. Turn off only if another owner manages that audit config (authoritative per service, docs/deploy.md)."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------- alert sinks

variable "alert_slack_webhook_url" {
  description = "Slack incoming-webhook URL. Stored in Secret Manager (write-only: never in state) and mounted as PATCHPANDA_ALERT_SLACK_WEBHOOK_URL. Empty = no Slack."
  type        = string
  default     = ""
  sensitive   = true
}

variable "alert_pagerduty_routing_key" {
  description = "PagerDuty Events v2 routing key. Stored in Secret Manager (write-only) and mounted as PATCHPANDA_ALERT_PAGERDUTY_ROUTING_KEY. Empty = no PagerDuty."
  type        = string
  default     = ""
  sensitive   = true
}

variable "alert_webhook_signing_secret" {
  description = "Key that signs the generic webhook's body (HMAC-SHA256). Stored in Secret Manager (write-only) and mounted as PATCHPANDA_ALERT_WEBHOOK_SECRET. Empty = unsigned."
  type        = string
  default     = ""
  sensitive   = true
}

variable "alert_secrets_version" {
  description = "Bump to push new values of alert_slack_webhook_url / alert_pagerduty_routing_key / alert_webhook_signing_secret: write-only values cannot be diffed, so this number is what Terraform sees change."
  type        = number
  default     = 1
}

variable "alert_webhook_url" {
  description = "Generic alert webhook URL (PATCHPANDA_ALERT_WEBHOOK_URL), a plain env var: it must not embed a credential; authenticate with alert_webhook_signing_secret (or the receiver's own auth) instead."
  type        = string
  default     = ""

  validation {
    condition     = var.alert_webhook_url == "" || startswith(var.alert_webhook_url, "https://")
    error_message = "alert_webhook_url must be an https:// URL."
  }
}

# ---------------------------------------------------------------- secrets

variable "secret_version_destroy_ttl" {
  description = "Delayed destruction of the App's secret versions (Secret Manager version_destroy_ttl), in seconds like \"604800s\": a destroyed version is disabled and scheduled, and can be recovered (`patchpanda secrets enable NAME VERSION`) until this has passed. At least a day."
  type        = string
  default     = "604800s" # 7 days

  validation {
    condition     = can(regex("^[0-9]+s$", var.secret_version_destroy_ttl)) && try(tonumber(trimsuffix(var.secret_version_destroy_ttl, "s")) >= 86400, false)
    error_message = "secret_version_destroy_ttl is a number of seconds like \"604800s\", at least 86400s (one day): shorter leaves no time to notice a destroyed version and recover it."
  }
}

# ---------------------------------------------------------------- Cloud Monitoring

variable "notification_email" {
  description = "Email address Cloud Monitoring sends every alert policy's incidents to (required). Policies also go to the optional PagerDuty and Slack channels below."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.notification_email))
    error_message = "notification_email must be set to the on-call email address Cloud Monitoring notifies (e.g. oncall@example.com)."
  }
}

variable "monitoring_pagerduty_service_key" {
  description = "Integration key of a PagerDuty service with the Google Cloud Monitoring integration. Empty = no PagerDuty channel. Unlike the alerter's sink credentials, Cloud Monitoring keeps it as a sensitive channel label, which is in Terraform state: protect the state."
  type        = string
  default     = ""
  sensitive   = true
}

variable "monitoring_slack_channel" {
  description = "Slack channel for Cloud Monitoring incidents, e.g. #patchpanda-oncall. Empty = no Slack channel. Needs monitoring_slack_auth_token."
  type        = string
  default     = ""

  validation {
    condition     = var.monitoring_slack_channel == "" || startswith(var.monitoring_slack_channel, "#")
    error_message = "monitoring_slack_channel is a channel name starting with # (e.g. #patchpanda-oncall), or empty."
  }
}

variable "monitoring_slack_auth_token" {
  description = "OAuth token of the Slack app that posts Cloud Monitoring incidents (xoxb-...), required with monitoring_slack_channel. Kept as a sensitive channel label, which is in Terraform state."
  type        = string
  default     = ""
  sensitive   = true
}

variable "webhook_5xx_ratio" {
  description = "Alert when more than this fraction of webhook-ingest's answers are 5xx over 5 minutes (GitHub does not retry on its own; the sweeper redelivers)."
  type        = number
  default     = 0.05
}

variable "webhook_p99_latency_ms" {
  description = "Alert when webhook-ingest's p99 /webhook latency stays above this (ms) for 5 minutes; GitHub gives up on a delivery after 10 s."
  type        = number
  default     = 8000

  validation {
    condition     = var.webhook_p99_latency_ms > 0 && var.webhook_p99_latency_ms < 10000
    error_message = "webhook_p99_latency_ms must be between 0 and 10000: GitHub's delivery timeout is 10 s."
  }
}

variable "secret_read_spike" {
  description = "Alert when one secret's value is read more than this many times in 10 minutes (any principal). The functions read at start and on refresh, so a handful is normal."
  type        = number
  default     = 50
}

variable "audit_feed_max_silence" {
  description = "Alert when patchpanda-audit-logs receives nothing for this long (seconds, like \"10800s\"): the sink, its filter or Data Access logging is broken. rotation-worker's hourly /tasks/finish reads every secret's metadata, which is logged, so hours of silence are never normal."
  type        = string
  default     = "10800s" # 3 hours

  validation {
    condition     = can(regex("^[0-9]+s$", var.audit_feed_max_silence)) && try(tonumber(trimsuffix(var.audit_feed_max_silence, "s")) >= 3600 && tonumber(trimsuffix(var.audit_feed_max_silence, "s")) <= 84600 && tonumber(trimsuffix(var.audit_feed_max_silence, "s")) % 60 == 0, false)
    error_message = "audit_feed_max_silence is a whole number of minutes in seconds between 3600s and 84600s (Cloud Monitoring's longest absence window, 23.5 h), like \"10800s\"."
  }
}

variable "service_account_key_account" {
  description = "Email of a service account that must use key-based auth and whose keys rotation-worker rotates (the `service-account-key` kind). Empty: keyless only (the default). Never one of the gateway's own accounts."
  type        = string
  default     = ""

  validation {
    condition     = var.service_account_key_account == "" || (can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]@[-a-z0-9.]+\\.iam\\.gserviceaccount\\.com$", var.service_account_key_account)) && !startswith(var.service_account_key_account, "patchpanda-"))
    error_message = "service_account_key_account must be a service account email (NAME@PROJECT.iam.gserviceaccount.com) and not one of the gateway's own patchpanda-* accounts."
  }
}
