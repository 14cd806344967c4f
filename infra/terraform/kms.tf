# The key ring and key named in docs/design.md. Secret Manager wraps every secret
# version with this key (CMEK); the rotation-worker creates versions and moves
# the primary; Cloud KMS also rotates it on its own schedule.

resource "google_kms_key_ring" "this" {
  project  = var.project
  name     = local.kms_key_ring_name
  location = var.region

  depends_on = [google_project_service.apis]
}

resource "google_kms_crypto_key" "secrets" {
  name            = local.kms_key_name
  key_ring        = google_kms_key_ring.this.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.kms_rotation_period
  # Old key versions keep decrypting the secret versions they wrapped; a
  # destroy of one is only scheduled, and 30 days leaves time to notice
  # (audit-alerter pages on DestroyCryptoKeyVersion) and restore.
  destroy_scheduled_duration = "2592000s"
  labels                     = local.common_labels

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = var.kms_protection_level
  }

  lifecycle {
    # Destroying the key makes every secret version unreadable. Cloud KMS
    # never deletes keys anyway; see docs/deploy.md (Tearing down).
    prevent_destroy = true
  }
}

# A separate key for Pub/Sub message storage, so that the Pub/Sub service
# agent's per-message Encrypt/Decrypt calls land on a key the audit sink does
# not forward as data access (see audit.tf), and so that the secrets key has
# exactly one data-plane user: the Secret Manager service agent.
resource "google_kms_crypto_key" "pubsub" {
  name                       = "patchpanda-pubsub-key"
  key_ring                   = google_kms_key_ring.this.id
  purpose                    = "ENCRYPT_DECRYPT"
  rotation_period            = var.kms_rotation_period
  destroy_scheduled_duration = "2592000s"
  labels                     = local.common_labels

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = var.kms_protection_level
  }

  lifecycle {
    prevent_destroy = true
  }
}

# Secret Manager encrypts and decrypts secret payloads with the key on the
# callers' behalf; the functions themselves never touch it for that.
resource "google_kms_crypto_key_iam_member" "secretmanager_agent" {
  crypto_key_id = google_kms_crypto_key.secrets.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_project_service_identity.secretmanager.email}"
}

resource "google_kms_crypto_key_iam_member" "pubsub_agent" {
  crypto_key_id = google_kms_crypto_key.pubsub.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# The rotation-worker rotates the key: new version, new primary, then an
# encrypt/decrypt round trip through the new primary as its "test" step.
resource "google_kms_crypto_key_iam_member" "rotation_worker" {
  crypto_key_id = google_kms_crypto_key.secrets.id
  role          = google_project_iam_custom_role.key_rotator.id
  member        = "serviceAccount:${google_service_account.fn["rotation-worker"].email}"
}
