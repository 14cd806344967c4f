# Cloud Scheduler jobs (docs/design.md, Wiring: redelivery sweep every 10 min when a
# GitHub App is configured, /tasks/finish hourly, rotation due-check daily,
# audit-alerter's tick every minute; plus optional forced rotations, POST
# /rotate, on a cron of your choice). Each call carries an OIDC token of the
# scheduler account with the service's audience (local.audiences).
#
# Delivery is at least once, and a retried or duplicated call is simply run
# again: no handler deduplicates on X-CloudScheduler-JobName/ScheduleTime
# durably. Only rotation-worker's /tasks/finish remembers, in memory and per
# instance, the last runs it answered by those headers and replays their
# report. What a repeat does instead: the sweep asks GitHub again for
# deliveries still failed (an instance that already published a delivery
# id drops the copy; another instance publishes it again, which
# at-least-once consumers allow); finish and tick find nothing left to do;
# due-check repeats its `due` notices; a repeated /rotate is refused (409)
# while the first rotation holds the secret's lease, and after it ended
# rotates once more: an extra rotation, not a broken one.

locals {
  all_scheduler_jobs = merge(
    {
      "redeliver" = {
        description = "Ask GitHub to redeliver the App's failed webhook deliveries."
        schedule    = "*/10 * * * *"
        service     = "webhook-ingest"
        path        = "/tasks/redeliver"
        body        = null
        # The next run is 10 minutes away: retrying would only overlap it.
        retries  = 0
        deadline = "300s"
      }
    },
    {
      "finish" = {
        description = "End rotation grace periods: disable `previous`, destroy disabled versions past retention."
        schedule    = "0 * * * *"
        service     = "rotation-worker"
        path        = "/tasks/finish"
        body        = null
        retries     = 3
        deadline    = "600s"
      }
    },
    {
      # audit-alerter's timers on Cloud Run (contract: POST /tasks/tick runs
      # what its background ticker does locally): release held changes
      # whose wait for a rotation notice is over, check that Data Access
      # entries still arrive, expire rotation windows. An instance with
      # request-based CPU gets no CPU between requests, so this call is
      # what makes those happen on time.
      "tick" = {
        description = "audit-alerter timers: held changes, Data Access silence check, window expiry."
        schedule    = "* * * * *"
        service     = "audit-alerter"
        path        = "/tasks/tick"
        body        = null
        # The next tick is a minute away; a retry would only overlap it.
        retries  = 0
        deadline = "60s"
      }
    },
    {
      # rotation-worker's due-check (/tasks/due-check) announces a `due`
      # notice for each secret that is too old or past its Secret Manager
      # rotation time; it rotates nothing itself. The rotations are started
      # by SECRET_ROTATE (secret-events push) or an operator.
      "due-check" = {
        description = "Daily rotation due-check of every PatchPanda secret."
        schedule    = var.rotation_due_check_schedule
        service     = "rotation-worker"
        path        = "/tasks/due-check"
        body        = null
        retries     = 3
        deadline    = "300s"
      }
    },
  )
  forced_rotation_jobs = {
    for secret, cron in var.scheduled_rotations : "rotate-${secret}" => {
      description = "Scheduled rotation of ${secret} (POST /rotate)."
      schedule    = cron
      service     = "rotation-worker"
      path        = "/rotate"
      body        = jsonencode({ secret = secret, emergency = false })
      retries     = 3
      deadline    = "600s"
    }
  }
  # The sweep needs the App (its JWT lists the deliveries).
  scheduler_jobs = merge(
    { for k, v in local.all_scheduler_jobs : k => v if k != "redeliver" || var.github_app_id != "" },
    local.forced_rotation_jobs,
  )
}

resource "google_cloud_scheduler_job" "job" {
  for_each         = local.scheduler_jobs
  project          = var.project
  region           = var.region
  name             = "patchpanda-${each.key}"
  description      = each.value.description
  schedule         = each.value.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = each.value.deadline

  retry_config {
    retry_count          = each.value.retries
    min_backoff_duration = "10s"
    max_backoff_duration = "300s"
    max_doublings        = 3
  }

  http_target {
    http_method = "POST"
    uri         = "${google_cloud_run_v2_service.fn[each.value.service].uri}${each.value.path}"
    # Only /rotate takes a body (the /tasks/* jobs take none, as with the
    # local scheduler). Without an explicit type Scheduler would send it as
    # application/octet-stream.
    headers = each.value.body == null ? null : { "Content-Type" = "application/json" }
    body    = each.value.body == null ? null : base64encode(each.value.body)

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = local.audiences[each.value.service]
    }
  }

  depends_on = [
    google_project_service.apis,
    google_cloud_run_v2_service_iam_member.private_invoker,
  ]
}
