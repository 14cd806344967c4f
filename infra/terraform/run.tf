# The three functions as Cloud Run services (one image each, built from
# infra/Dockerfile with FUNCTION=<name>).

locals {
  # Allowed `email` claims of push and scheduler tokens (checked in-process
  # by every function, on top of Cloud Run's own IAM check where it has one).
  operator_emails = [for m in var.operator_members : split(":", m)[1] if !startswith(m, "group:")]
  push_callers    = concat([google_service_account.push.email, google_service_account.scheduler.email], local.operator_emails)

  # Identities whose reads of secret values and rotation changes are
  # expected (audit-alerter's allowlists; docs/design.md says they default to
  # the functions' own, which on gcp are these accounts).
  reader_principals = concat(
    [google_service_account.fn["webhook-ingest"].email, google_service_account.fn["rotation-worker"].email],
    var.extra_reader_principals,
  )
  rotator_principals = concat([google_service_account.fn["rotation-worker"].email], var.extra_rotator_principals)

  common_env = {
    PATCHPANDA_BACKEND               = "gcp"
    GOOGLE_CLOUD_PROJECT             = var.project
    GITHUB_APP_ID                    = var.github_app_id
    GITHUB_API_URL                   = var.github_api_url
    PATCHPANDA_KMS_LOCATION          = var.region
    PATCHPANDA_KMS_KEY_RING          = local.kms_key_ring_name
    PATCHPANDA_KMS_KEY               = local.kms_key_name
    PATCHPANDA_PUSH_SERVICE_ACCOUNTS = join(",", local.push_callers)
    PATCHPANDA_READER_PRINCIPALS     = join(",", local.reader_principals)
    PATCHPANDA_ROTATOR_PRINCIPALS    = join(",", local.rotator_principals)
    PATCHPANDA_ROTATION_GRACE        = var.rotation_grace
    PATCHPANDA_ORDERING              = var.ordering
    DEBUG                            = tostring(var.debug)
  }

  services = {
    "webhook-ingest" = {
      # Public: GitHub cannot present Google credentials.
      ingress = "INGRESS_TRAFFIC_ALL"
      min     = var.webhook_min_instances
      max     = var.max_instances
      # Deliveries are I/O-bound (verify, publish); one instance takes many.
      concurrency = 80
      # GitHub gives up after 10 s; the sweeper's /tasks/redeliver pages
      # through recent deliveries and may take longer.
      timeout = "300s"
      env = {
        # glibc keeps freed 25 MiB bodies resident once its mmap threshold
        # has grown; pinned at 1 MiB, peak memory under a flood of forged
        # bodies stays under the ingest's byte budget (BENCHMARKS.md).
        MALLOC_MMAP_THRESHOLD_ = "1048576"
      }
    }
    "rotation-worker" = {
      ingress = var.private_ingress
      min     = 0
      # One instance: rotations are rare, and a single instance keeps two
      # rotations of one secret from racing (the protocol is CAS-guarded
      # anyway, this just avoids the retries).
      max         = 1
      concurrency = 10
      # Matches the secret-events subscription's 600 s ack deadline.
      timeout = "600s"
      env = {
        # Opt-in: the one key-based account whose keys the worker rotates
        # (docs/runbook.md, service-account keys); unset = keyless only.
        PATCHPANDA_SA_KEY_ACCOUNT = var.service_account_key_account
      }
    }
    "audit-alerter" = {
      ingress = var.private_ingress
      # One warm instance keeps the in-memory rotation windows, dedup and
      # spike counters across quiet spells (Cloud Run may still replace it;
      # held changes and undelivered alerts survive that because the alerter
      # nacks them and Pub/Sub redelivers). Timers do not depend on it:
      # Cloud Scheduler calls POST /tasks/tick every minute (scheduler.tf),
      # so CPU is only needed inside requests and request-based billing
      # (cpu_idle) stays.
      min = var.alerter_min_instances
      # One instance: dedup, rotation windows and spike counters live in
      # memory, so a rotation notice pushed to one instance must cover the
      # audit entries pushed to it; a second instance would page falsely.
      max         = 1
      concurrency = 40
      # = the audit-logs subscription's ack deadline (pubsub.tf): Pub/Sub
      # counts a push answered later as a nack anyway, and a stuck paging
      # sink should turn into a 503 and a backed-off redelivery, not a
      # request held open.
      timeout = "60s"
      env = {
        # Operators whose announced changes (`patchpanda secrets add`
        # publishes an `announced` notice first) are filed as announced
        # rather than paged; anyone else still pages.
        PATCHPANDA_OPERATOR_PRINCIPALS = join(",", local.operator_emails)
        PATCHPANDA_ALERT_WEBHOOK_URL   = var.alert_webhook_url
        # The same account: its keys created or deleted by the rotator inside
        # a rotation of that kind are routine; by anyone else they alert.
        PATCHPANDA_SA_KEY_ACCOUNT = var.service_account_key_account
        # The deployment's own accounts (emails and unique ids, as audit
        # entries name them either way), whose keys and tokens it watches.
        PATCHPANDA_GATEWAY_SERVICE_ACCOUNTS = join(",", concat(local.watched_accounts, local.watched_account_ids))
      }
    }
  }
}

locals {
  # What each service is told about itself: its push/scheduler audience, its
  # identity on gcp (the runtime service account: rotation notices, audit
  # entries and the alerter's allowlists all name this email), and the
  # runtime's request timeout, equal to Cloud Run's so neither cuts a
  # request the other still allows.
  own_env = {
    for f, s in local.services : f => {
      PATCHPANDA_PUSH_AUDIENCE   = local.audiences[f]
      PATCHPANDA_PRINCIPAL       = google_service_account.fn[f].email
      PATCHPANDA_REQUEST_TIMEOUT = s.timeout
    }
  }
}

resource "google_cloud_run_v2_service" "fn" {
  for_each            = local.services
  project             = var.project
  name                = local.service_names[each.key]
  location            = var.region
  ingress             = each.value.ingress
  deletion_protection = var.deletion_protection
  labels              = merge(local.common_labels, { function = each.key })
  # See local.audiences: the audience every push/scheduler token carries.
  custom_audiences = [local.audiences[each.key]]

  template {
    service_account                  = google_service_account.fn[each.key].email
    max_instance_request_concurrency = each.value.concurrency
    timeout                          = each.value.timeout
    labels                           = merge(local.common_labels, { function = each.key })

    scaling {
      min_instance_count = each.value.min
      max_instance_count = each.value.max
    }

    containers {
      name  = each.key
      image = local.images[each.key]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        # Request-based billing: the functions finish all work before they
        # answer (runtime.md), so no CPU is needed between requests.
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        # Empty values are left out: the functions treat unset and empty
        # alike, and Cloud Run would show an empty value as a perpetual diff.
        for_each = {
          for k, v in merge(local.common_env, each.value.env, local.own_env[each.key]) : k => v if v != ""
        }
        content {
          name  = env.key
          value = env.value
        }
      }

      # Slack URL and PagerDuty key: mounted from Secret Manager, pinned to
      # the version Terraform wrote (audit-alerter only).
      dynamic "env" {
        for_each = { for k, v in google_secret_manager_secret_version.alert : k => v.version if each.key == "audit-alerter" }
        content {
          name = local.alert_secrets[env.key].env
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.alert[env.key].secret_id
              version = env.value
            }
          }
        }
      }

      # /ready answers once config is loaded and the secrets cache is warm;
      # up to 60 s for a cold start that waits on Secret Manager.
      startup_probe {
        initial_delay_seconds = 0
        period_seconds        = 2
        timeout_seconds       = 2
        failure_threshold     = 30
        http_get {
          path = "/ready"
          port = 8080
        }
      }

      liveness_probe {
        period_seconds    = 30
        timeout_seconds   = 5
        failure_threshold = 3
        http_get {
          path = "/health"
          port = 8080
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    precondition {
      # The deterministic URL (the audience) exists only while the DNS label
      # SERVICE-PROJECT_NUMBER fits in 63 characters.
      condition     = length("${local.service_names[each.key]}-${local.project_number}") <= 63
      error_message = "Service name plus project number exceed 63 characters: Cloud Run would not assign the deterministic URL used as the push audience."
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.ingest_reads,
    google_secret_manager_secret_iam_member.worker_rotates,
    google_secret_manager_secret_iam_member.alerter_reads_sinks,
    google_pubsub_topic_iam_member.function_publishes,
    google_pubsub_topic_iam_member.function_checks_bus,
    google_project_iam_member.worker_lists_secrets,
  ]
}

# ---------------------------------------------------------------- invokers

# webhook-ingest must take requests from GitHub, which cannot present Google
# credentials; the X-Hub-Signature-256 HMAC is the authentication, and the
# service's /events/* and /tasks/* endpoints verify the push/scheduler OIDC
# token themselves (PATCHPANDA_PUSH_SERVICE_ACCOUNTS / _AUDIENCE).
resource "google_cloud_run_v2_service_iam_member" "ingest_public" {
  # (checkov's CKV_GCP_102 "Cloud Run not public" covers only the v1
  # google_cloud_run_service_iam_* resources; this public grant is the one
  # deliberate exception, justified above.)
  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_service.fn["webhook-ingest"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

locals {
  # Who may invoke the private services: Pub/Sub push (both), Cloud Scheduler
  # (rotation-worker's jobs and audit-alerter's tick) and the listed
  # operators (both).
  private_invokers = merge(
    { for s in ["rotation-worker", "audit-alerter"] : "${s}/push" => { service = s, member = "serviceAccount:${google_service_account.push.email}" } },
    { for s in ["rotation-worker", "audit-alerter"] : "${s}/scheduler" => { service = s, member = "serviceAccount:${google_service_account.scheduler.email}" } },
    { for pair in setproduct(["rotation-worker", "audit-alerter"], var.operator_members) : "${pair[0]}/${pair[1]}" => { service = pair[0], member = pair[1] } },
  )
}

resource "google_cloud_run_v2_service_iam_member" "private_invoker" {
  for_each = local.private_invokers
  project  = var.project
  location = var.region
  name     = google_cloud_run_v2_service.fn[each.value.service].name
  role     = "roles/run.invoker"
  member   = each.value.member
}
