output "webhook_url" {
  description = "Paste into the GitHub App's settings as the Webhook URL."
  value       = "${google_cloud_run_v2_service.fn["webhook-ingest"].uri}/webhook"
}

output "service_urls" {
  description = "Cloud Run URL of each function."
  value       = { for f, s in google_cloud_run_v2_service.fn : f => s.uri }
}

output "push_audiences" {
  description = "OIDC audience each function expects (PATCHPANDA_PUSH_AUDIENCE); use it with `patchpanda token --audience`."
  value       = local.audiences
}

output "service_accounts" {
  description = "Runtime service account of each function, and the push and scheduler invoker accounts."
  value = merge(
    { for f, sa in google_service_account.fn : f => sa.email },
    { push = google_service_account.push.email, scheduler = google_service_account.scheduler.email },
  )
}

output "secret_ids" {
  description = "Secret Manager ids of the App's secrets (add values with `patchpanda secrets add`)."
  value       = { for k, s in google_secret_manager_secret.app : k => s.secret_id }
}

output "kms_key" {
  description = "The Cloud KMS key that wraps the secrets."
  value       = google_kms_crypto_key.secrets.id
}

output "topics" {
  description = "Pub/Sub topics, by their docs/design.md name."
  value       = { for k, t in google_pubsub_topic.main : k => t.id }
}

output "dead_letter_subscriptions" {
  description = "Pull subscriptions holding dead-lettered messages; check them when a push endpoint has been failing."
  value       = { for k, s in google_pubsub_subscription.dead_letter : k => s.id }
}

output "image_registry" {
  description = "Where `docker push` should send the images (REGISTRY/FUNCTION:TAG)."
  value       = local.image_registry
}

output "monitoring_dashboard" {
  description = "The Cloud Monitoring dashboard \"PatchPanda Gateway\" (Console -> Monitoring -> Dashboards); docs/deploy.md explains each panel."
  value       = google_monitoring_dashboard.gateway.id
}

output "notification_channels" {
  description = "Cloud Monitoring channels every PatchPanda alert policy notifies (email, and PagerDuty/Slack when configured)."
  value       = local.notification_channels
}
