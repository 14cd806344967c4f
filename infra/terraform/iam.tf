# One service account per function, one that Pub/Sub signs push tokens as,
# and one that Cloud Scheduler signs its calls as. Every grant is on the one
# resource it is for (secret, topic, key, service); nothing at project level.

resource "google_service_account" "fn" {
  for_each     = toset(local.functions)
  project      = var.project
  account_id   = "patchpanda-${each.key}"
  display_name = "PatchPanda ${each.key}"
  description  = "Runtime identity of the ${each.key} Cloud Run service."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "push" {
  project      = var.project
  account_id   = "patchpanda-push"
  display_name = "PatchPanda Pub/Sub push invoker"
  description  = "Pub/Sub signs push requests to the functions as this account (OIDC); it can only invoke them."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "scheduler" {
  project      = var.project
  account_id   = "patchpanda-scheduler"
  display_name = "PatchPanda Cloud Scheduler invoker"
  description  = "Cloud Scheduler signs job calls to the functions as this account (OIDC); it can only invoke them."

  depends_on = [google_project_service.apis]
}

# Pub/Sub mints the push OIDC tokens as the push account. Projects created
# since April 2021 grant this implicitly; older ones need it, and it is
# scoped to this one account.
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# ---------------------------------------------------------------- custom roles

# Predefined roles/secretmanager.secretAccessor grants only versions.access,
# but the functions must also read the secret itself (GetSecret) to resolve
# the `current`/`previous` aliases and the previous-valid-until annotation,
# and list versions. roles/secretmanager.viewer would add those, but the pair
# is two bindings per secret; this role is exactly the four reads.
resource "google_project_iam_custom_role" "secret_reader" {
  project     = var.project
  role_id     = "patchpandaSecretReader"
  title       = "PatchPanda secret reader"
  description = "Read a secret's metadata, aliases and version values; change nothing."
  permissions = [
    "secretmanager.secrets.get",
    "secretmanager.versions.access",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
  ]

  depends_on = [google_project_service.apis]
}

# roles/secretmanager.admin could do the rotation but also deletes secrets
# and rewrites their IAM policy; roles/secretmanager.secretVersionManager
# cannot update the secret (aliases, annotations) nor read values (needed to
# apply and test a new version). This is the rotation protocol's exact set:
# add, enable (rollback), disable, destroy versions; move aliases and
# annotations (UpdateSecret); read. No delete, no setIamPolicy.
resource "google_project_iam_custom_role" "secret_rotator" {
  project     = var.project
  role_id     = "patchpandaSecretRotator"
  title       = "PatchPanda secret rotator"
  description = "Add, enable, disable and destroy versions and update aliases/annotations of PatchPanda secrets."
  permissions = [
    "secretmanager.secrets.get",
    "secretmanager.secrets.update",
    "secretmanager.versions.access",
    "secretmanager.versions.add",
    "secretmanager.versions.destroy",
    "secretmanager.versions.disable",
    "secretmanager.versions.enable",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
  ]

  depends_on = [google_project_service.apis]
}

# roles/cloudkms.admin would also destroy versions and change the key's IAM
# policy. The worker needs to create a version, make it primary
# (cryptoKeys.update), inspect versions, and round-trip a probe through the
# new primary. It cannot disable, destroy or restore versions.
resource "google_project_iam_custom_role" "key_rotator" {
  project     = var.project
  role_id     = "patchpandaKeyRotator"
  title       = "PatchPanda KMS key rotator"
  description = "Create key versions, set the primary, and test them with an encrypt/decrypt round trip."
  permissions = [
    "cloudkms.cryptoKeys.get",
    "cloudkms.cryptoKeys.update",
    "cloudkms.cryptoKeyVersions.create",
    "cloudkms.cryptoKeyVersions.get",
    "cloudkms.cryptoKeyVersions.list",
    "cloudkms.cryptoKeyVersions.useToDecrypt",
    "cloudkms.cryptoKeyVersions.useToEncrypt",
  ]

  depends_on = [google_project_service.apis]
}

# roles/pubsub.publisher grants only pubsub.topics.publish, but the bus's
# health check (readiness, `patchpanda health`) reads the topic (GetTopic);
# roles/pubsub.viewer or editor would add subscription and snapshot access
# across the project. Publish + get on one topic is the need.
resource "google_project_iam_custom_role" "topic_publisher" {
  project     = var.project
  role_id     = "patchpandaTopicPublisher"
  title       = "PatchPanda topic publisher"
  description = "Publish to a topic and read its metadata."
  permissions = [
    "pubsub.topics.get",
    "pubsub.topics.publish",
  ]

  depends_on = [google_project_service.apis]
}

# The shared bus checks reachability by reading patchpanda-github-events
# (its default check topic) whatever the function publishes to; functions
# that do not publish there get only that read.
resource "google_project_iam_custom_role" "topic_viewer" {
  project     = var.project
  role_id     = "patchpandaTopicViewer"
  title       = "PatchPanda topic viewer"
  description = "Read a topic's metadata (bus health checks)."
  permissions = ["pubsub.topics.get"]

  depends_on = [google_project_service.apis]
}

# The one project-level grant. rotation-worker's readiness check lists
# secrets (ListSecrets), a permission Secret Manager only evaluates on the
# project. It reveals secret names, labels and annotations, never values.
# Remove it once the worker's /ready reads its own secrets instead.
resource "google_project_iam_custom_role" "secret_lister" {
  project     = var.project
  role_id     = "patchpandaSecretLister"
  title       = "PatchPanda secret lister"
  description = "List the project's secrets (metadata only)."
  permissions = ["secretmanager.secrets.list"]

  depends_on = [google_project_service.apis]
}

resource "google_project_iam_member" "worker_lists_secrets" {
  project = var.project
  role    = google_project_iam_custom_role.secret_lister.id
  member  = "serviceAccount:${google_service_account.fn["rotation-worker"].email}"
}

# The opt-in service-account-key kind: the worker creates, tests and deletes
# keys of that one account, and nothing else.
resource "google_service_account_iam_member" "worker_rotates_sa_keys" {
  count              = var.service_account_key_account == "" ? 0 : 1
  service_account_id = "projects/${var.project}/serviceAccounts/${var.service_account_key_account}"
  role               = "roles/iam.serviceAccountKeyAdmin"
  member             = "serviceAccount:${google_service_account.fn["rotation-worker"].email}"
}
