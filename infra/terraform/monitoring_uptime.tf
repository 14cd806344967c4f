# Uptime check of webhook-ingest, the one public service: GET /health over
# HTTPS from Google's checkers in several regions every minute. The runtime
# answers 200 "ok" on /health as long as the process serves (no dependency
# checks: those are /ready and `patchpanda health`). The policy that pages
# on it is google_monitoring_alert_policy.ingest_uptime.

resource "google_monitoring_uptime_check_config" "ingest_health" {
  project      = var.project
  display_name = "PatchPanda webhook-ingest /health"
  period       = "60s"
  timeout      = "10s"

  http_check {
    request_method = "GET"
    path           = "/health"
    port           = 443
    use_ssl        = true
    validate_ssl   = true

    accepted_response_status_codes {
      status_class = "STATUS_CLASS_2XX"
    }
  }

  content_matchers {
    content = "ok"
    matcher = "CONTAINS_STRING"
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project
      host       = trimsuffix(trimprefix(google_cloud_run_v2_service.fn["webhook-ingest"].uri, "https://"), "/")
    }
  }

  user_labels = local.common_labels

  depends_on = [google_project_service.apis]
}
