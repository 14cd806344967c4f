# PatchPanda Gateway on Google Cloud: three Cloud Run services, the App's
# secrets in Secret Manager under a Cloud KMS key, Pub/Sub wiring, Cloud
# Scheduler jobs and the audit-log sink that feeds audit-alerter.
# Names follow docs/design.md (Names) and shared/src/names.rs: they are constants
# in the code, so they are not variables here.

data "google_project" "this" {
  project_id = var.project
}

locals {
  functions = ["webhook-ingest", "rotation-worker", "audit-alerter"]

  service_names = { for f in local.functions : f => "patchpanda-${f}" }

  # The push/scheduler audience. Cloud Run's deterministic URL
  # (https://SERVICE-PROJECT_NUMBER.REGION.run.app) is known before the
  # service exists, so the service can be told its own audience
  # (PATCHPANDA_PUSH_AUDIENCE) without depending on its own `uri` output,
  # which would be a cycle. Subscriptions and scheduler jobs set exactly this
  # string as their OIDC audience, and each service also lists it in
  # custom_audiences so Cloud Run's IAM check accepts it whatever URL form
  # `uri` reports.
  project_number = data.google_project.this.number
  audiences      = { for f, n in local.service_names : f => "https://${n}-${local.project_number}.${var.region}.run.app" }

  secret_prefix = "patchpanda-"
  app_secrets = concat(
    ["github-private-key", "webhook-secret"],
    var.enable_oidc_client_secret ? ["oidc-client-secret"] : [],
  )
  # What webhook-ingest may read: the signature secret, and the private key
  # the redelivery sweeper signs its App JWT with.
  ingest_secrets = ["github-private-key", "webhook-secret"]

  kms_key_ring_name = "patchpanda-keys"
  kms_key_name      = "patchpanda-crypto-key"

  common_labels = merge(var.labels, { app = "patchpanda" })

  image_registry = (
    var.image_registry != ""
    ? trimsuffix(var.image_registry, "/")
    : "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.images[0].repository_id}"
  )
  images = { for f in local.functions : f => lookup(var.images, f, "${local.image_registry}/${f}:${var.image_tag}") }
}

# ---------------------------------------------------------------- APIs

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    # Cloud Monitoring: notification channels, alert policies, the uptime
    # check and the dashboard (monitoring_*.tf, notifications.tf).
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
  ])
  project = var.project
  service = each.value
  # Other workloads in the project may use the same APIs; tearing this
  # deployment down must not switch them off.
  disable_on_destroy = false
}

# ---------------------------------------------------------------- service agents
# Google creates service agents lazily; these make them exist now, so the
# key and topic grants below do not fail on a fresh project.

resource "google_project_service_identity" "secretmanager" {
  provider   = google-beta
  project    = var.project
  service    = "secretmanager.googleapis.com"
  depends_on = [google_project_service.apis]
}

resource "google_project_service_identity" "pubsub" {
  provider   = google-beta
  project    = var.project
  service    = "pubsub.googleapis.com"
  depends_on = [google_project_service.apis]
}

# ---------------------------------------------------------------- images

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Images hold only compiled code of this repository, no secrets or data (those live in Secret Manager); CMEK would add the Artifact Registry service agent to a key for no confidentiality gain.
  count         = var.image_registry == "" ? 1 : 0
  project       = var.project
  location      = var.region
  repository_id = "patchpanda"
  description   = "PatchPanda Gateway function images"
  format        = "DOCKER"
  labels        = local.common_labels

  docker_config {
    # A tag, once pushed, always means the same image: deployments by tag
    # stay reproducible and an attacker with push rights cannot swap one.
    immutable_tags = true
  }

  depends_on = [google_project_service.apis]
}
