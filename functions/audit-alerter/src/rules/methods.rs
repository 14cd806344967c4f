//! Method names as every rule matches them: the service plus the method's
//! last segment, compared ASCII case-insensitively. Secret Manager logs
//! `google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion`
//! through v1 and `...v1beta1...` / `...v1beta2...` through the betas; IAM
//! admin logs `google.iam.admin.v1.SetIAMPolicy` where Secret Manager and
//! KMS log `SetIamPolicy`; KMS and iamcredentials log bare names. Matching
//! the tail makes all of them one call, so a caller cannot step around a
//! rule by picking another API version.

/// The last dot-separated segment (`AccessSecretVersion`).
pub fn op(method: &str) -> &str {
    method.rsplit('.').next().unwrap_or(method)
}

/// Whether `method` is `want` in any version of its API.
pub fn is(method: &str, want: &str) -> bool {
    op(method).eq_ignore_ascii_case(want)
}

pub mod sm {
    pub const ACCESS_SECRET_VERSION: &str = "AccessSecretVersion";
    pub const ADD_SECRET_VERSION: &str = "AddSecretVersion";
    pub const ENABLE_SECRET_VERSION: &str = "EnableSecretVersion";
    pub const DISABLE_SECRET_VERSION: &str = "DisableSecretVersion";
    pub const DESTROY_SECRET_VERSION: &str = "DestroySecretVersion";
    pub const UPDATE_SECRET: &str = "UpdateSecret";
    pub const DELETE_SECRET: &str = "DeleteSecret";
    pub const SET_IAM_POLICY: &str = "SetIamPolicy";
}

pub mod kms {
    pub const ENCRYPT: &str = "Encrypt";
    pub const DECRYPT: &str = "Decrypt";
    pub const UPDATE_CRYPTO_KEY_VERSION: &str = "UpdateCryptoKeyVersion";
    pub const DESTROY_CRYPTO_KEY_VERSION: &str = "DestroyCryptoKeyVersion";
    pub const UPDATE_CRYPTO_KEY_PRIMARY_VERSION: &str = "UpdateCryptoKeyPrimaryVersion";
    pub const UPDATE_CRYPTO_KEY: &str = "UpdateCryptoKey";
    pub const IMPORT_CRYPTO_KEY_VERSION: &str = "ImportCryptoKeyVersion";
    pub const SET_IAM_POLICY: &str = "SetIamPolicy";
}

pub mod iam {
    pub const CREATE_SERVICE_ACCOUNT_KEY: &str = "CreateServiceAccountKey";
    pub const UPLOAD_SERVICE_ACCOUNT_KEY: &str = "UploadServiceAccountKey";
    pub const DELETE_SERVICE_ACCOUNT_KEY: &str = "DeleteServiceAccountKey";
    /// `SetIAMPolicy` in IAM admin's spelling; [`super::is`] ignores case.
    pub const SET_IAM_POLICY: &str = "SetIamPolicy";
}

pub mod iamcredentials {
    pub const TOKEN_METHODS: [&str; 4] = [
        "GenerateAccessToken",
        "GenerateIdToken",
        "SignJwt",
        "SignBlob",
    ];
}

/// Project IAM (Resource Manager): where audit configs live.
pub mod resourcemanager {
    pub const SERVICE: &str = "cloudresourcemanager.googleapis.com";
    pub const SET_IAM_POLICY: &str = "SetIamPolicy";
}

/// Cloud Logging's sink configuration (`google.logging.v2.ConfigServiceV2`).
pub mod logging {
    pub const SERVICE: &str = "logging.googleapis.com";
    pub const CHANGES: [&str; 2] = ["UpdateSink", "DeleteSink"];
}

/// Pub/Sub admin (`google.pubsub.v1.Subscriber` / `Publisher`).
pub mod pubsub {
    pub const SERVICE: &str = "pubsub.googleapis.com";
    pub const CHANGES: [&str; 7] = [
        "UpdateSubscription",
        "DeleteSubscription",
        "ModifyPushConfig",
        "DetachSubscription",
        "UpdateTopic",
        "DeleteTopic",
        "SetIamPolicy",
    ];
}

/// Cloud Run admin (`google.cloud.run.v2.Services`, v1's `ReplaceService`).
pub mod run {
    pub const SERVICE: &str = "run.googleapis.com";
    pub const CHANGES: [&str; 5] = [
        "UpdateService",
        "ReplaceService",
        "DeleteService",
        "CreateService",
        "SetIamPolicy",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_of_a_method_is_the_same_call() {
        for m in [
            "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion",
            "google.cloud.secretmanager.v1beta1.SecretManagerService.AccessSecretVersion",
            "google.cloud.secretmanager.v1beta2.SecretManagerService.AccessSecretVersion",
        ] {
            assert!(is(m, sm::ACCESS_SECRET_VERSION), "{m}");
        }
        assert!(is("google.iam.admin.v1.SetIAMPolicy", iam::SET_IAM_POLICY));
        assert!(is("SetIamPolicy", kms::SET_IAM_POLICY));
        assert!(is("Decrypt", kms::DECRYPT));
        assert!(!is(
            "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersions",
            sm::ACCESS_SECRET_VERSION
        ));
    }
}
