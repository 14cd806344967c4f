//! The google-cloud-rust crates' errors and well-known types, turned into this
//! crate's. Shared by the gcp backends of secrets, KMS and the bus.

use chrono::{DateTime, Utc};
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;

use crate::Error;

/// Maps a client-library error to the canonical-code [`Error`], naming the
/// resource. The service's own message is kept: Google's services never echo
/// payloads in it.
pub(crate) fn to_error(err: &GaxError, resource: &str) -> Error {
    if let Some(status) = err.status() {
        let msg = if status.message.is_empty() {
            format!("{resource} ({})", status.code.name())
        } else {
            format!("{resource}: {}", status.message)
        };
        return from_code(status.code, msg);
    }
    if err.is_timeout() || err.is_exhausted() || err.is_connect() || err.is_io() {
        return Error::Unavailable(format!("{resource}: {err}"));
    }
    if err.is_authentication() {
        // Credentials that failed for a passing reason (metadata server slow)
        // deserve a retry; missing or rejected ones do not.
        return if err.is_transient_and_before_rpc() {
            Error::Unavailable(format!("{resource}: {err}"))
        } else {
            Error::PermissionDenied(format!("{resource}: {err}"))
        };
    }
    if err.is_binding() {
        // The request did not fit the resource-name pattern of any binding.
        return Error::InvalidArgument(format!("{resource}: not a valid resource name"));
    }
    if let Some(code) = err.http_status_code() {
        // A proxy or load balancer answered without a Google status.
        let msg = format!("{resource}: HTTP {code}");
        return match code {
            400 => Error::InvalidArgument(msg),
            401 | 403 => Error::PermissionDenied(msg),
            404 => Error::NotFound(msg),
            409 => Error::Aborted(msg),
            412 => Error::FailedPrecondition(msg),
            408 | 429 | 500..=599 => Error::Unavailable(msg),
            _ => Error::Internal(msg),
        };
    }
    if err.is_transport() {
        return Error::Unavailable(format!("{resource}: {err}"));
    }
    Error::Internal(format!("{resource}: {err}"))
}

fn from_code(code: Code, msg: String) -> Error {
    match code {
        Code::NotFound => Error::NotFound(msg),
        Code::AlreadyExists => Error::AlreadyExists(msg),
        Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(msg),
        Code::FailedPrecondition => Error::FailedPrecondition(msg),
        Code::Aborted => Error::Aborted(msg),
        Code::PermissionDenied | Code::Unauthenticated => Error::PermissionDenied(msg),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
            Error::Unavailable(msg)
        }
        Code::DataLoss => Error::DataLoss(msg),
        _ => Error::Internal(msg),
    }
}

/// An error building a client (credentials or transport), at start-up.
pub(crate) fn from_builder(err: &google_cloud_gax::client_builder::Error, what: &str) -> Error {
    if err.is_default_credentials() {
        Error::PermissionDenied(format!(
            "{what}: no Application Default Credentials ({err}); run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS"
        ))
    } else if err.is_transport() {
        Error::Unavailable(format!("{what}: {err}"))
    } else {
        Error::Internal(format!("{what}: {err}"))
    }
}

/// The client libraries' own request logging (`GOOGLE_CLOUD_RUST_LOGGING=true`)
/// prints whole requests and responses at DEBUG, payloads and plaintexts
/// included; a client that carries secrets must not start with it on.
pub(crate) fn refuse_payload_logging(what: &str) -> crate::Result<()> {
    refuse_payload_logging_if(
        std::env::var("GOOGLE_CLOUD_RUST_LOGGING").ok().as_deref(),
        what,
    )
}

fn refuse_payload_logging_if(value: Option<&str>, what: &str) -> crate::Result<()> {
    if value == Some("true") {
        Err(Error::FailedPrecondition(format!(
            "{what}: GOOGLE_CLOUD_RUST_LOGGING=true would log secret payloads; unset it"
        )))
    } else {
        Ok(())
    }
}

/// CRC32C as the APIs carry it: an int64 holding the unsigned 32-bit value.
pub(crate) fn crc32c(data: &[u8]) -> i64 {
    i64::from(crc32c::crc32c(data))
}

pub(crate) fn time(ts: &google_cloud_wkt::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds(), u32::try_from(ts.nanos()).ok()?)
}

/// A timestamp the service must send; its absence is the service's fault.
pub(crate) fn required_time(
    ts: Option<&google_cloud_wkt::Timestamp>,
    field: &str,
    resource: &str,
) -> crate::Result<DateTime<Utc>> {
    ts.and_then(time)
        .ok_or_else(|| Error::Internal(format!("{resource}: response lacks a valid {field}")))
}

pub(crate) fn duration(d: &google_cloud_wkt::Duration) -> Option<std::time::Duration> {
    std::time::Duration::try_from(*d).ok()
}

/// A project id or number, checked before it goes into a resource name.
pub(crate) fn validate_project(project: &str) -> crate::Result<()> {
    let ok = !project.is_empty()
        && project.len() <= 100
        && project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::InvalidArgument(format!(
            "{project:?} is not a project id"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::Status;

    fn service(code: Code) -> GaxError {
        GaxError::service(Status::default().set_code(code).set_message("boom"))
    }

    #[test]
    fn status_codes_map_to_canonical_errors() {
        type IsExpected = fn(&Error) -> bool;
        let cases: [(Code, IsExpected); 16] = [
            (Code::NotFound, |e| matches!(e, Error::NotFound(_))),
            (Code::AlreadyExists, |e| {
                matches!(e, Error::AlreadyExists(_))
            }),
            (Code::InvalidArgument, |e| {
                matches!(e, Error::InvalidArgument(_))
            }),
            (Code::OutOfRange, |e| matches!(e, Error::InvalidArgument(_))),
            (Code::FailedPrecondition, |e| {
                matches!(e, Error::FailedPrecondition(_))
            }),
            (Code::Aborted, |e| matches!(e, Error::Aborted(_))),
            (Code::PermissionDenied, |e| {
                matches!(e, Error::PermissionDenied(_))
            }),
            (Code::Unauthenticated, |e| {
                matches!(e, Error::PermissionDenied(_))
            }),
            (Code::Unavailable, |e| matches!(e, Error::Unavailable(_))),
            (Code::DeadlineExceeded, |e| {
                matches!(e, Error::Unavailable(_))
            }),
            (Code::ResourceExhausted, |e| {
                matches!(e, Error::Unavailable(_))
            }),
            (Code::DataLoss, |e| matches!(e, Error::DataLoss(_))),
            (Code::Internal, |e| matches!(e, Error::Internal(_))),
            (Code::Unknown, |e| matches!(e, Error::Internal(_))),
            (Code::Unimplemented, |e| matches!(e, Error::Internal(_))),
            (Code::Cancelled, |e| matches!(e, Error::Internal(_))),
        ];
        for (code, ok) in cases {
            let e = to_error(&service(code), "projects/p/secrets/s");
            assert!(ok(&e), "{code:?} -> {e:?}");
            assert!(e.to_string().contains("projects/p/secrets/s"), "{e}");
        }
    }

    #[test]
    fn transport_failures_are_retryable() {
        assert!(matches!(
            to_error(&GaxError::timeout("slow"), "r"),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            to_error(&GaxError::io("reset"), "r"),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            to_error(&GaxError::connect("refused"), "r"),
            Error::Unavailable(_)
        ));
        let http = |code| GaxError::http(code, http::HeaderMap::new(), bytes::Bytes::new());
        assert!(matches!(to_error(&http(503), "r"), Error::Unavailable(_)));
        assert!(matches!(to_error(&http(404), "r"), Error::NotFound(_)));
        assert!(matches!(
            to_error(&http(403), "r"),
            Error::PermissionDenied(_)
        ));
    }

    #[test]
    fn request_logging_that_would_show_payloads_is_refused() {
        assert!(matches!(
            refuse_payload_logging_if(Some("true"), "Secret Manager client"),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(refuse_payload_logging_if(Some("false"), "x").is_ok());
        assert!(refuse_payload_logging_if(None, "x").is_ok());
    }

    #[test]
    fn crc_is_the_unsigned_value() {
        // A value with the high bit set must stay positive, as the APIs expect.
        let c = crc32c(b"\xff\xfe\xfd");
        assert!(c >= 0);
        assert_eq!(c, i64::from(crc32c::crc32c(b"\xff\xfe\xfd")));
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn timestamps_round_trip() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        let ts = google_cloud_wkt::Timestamp::new(1_700_000_000, 123_000_000).unwrap();
        assert_eq!(time(&ts), Some(t));
        assert!(required_time(None, "create_time", "x").is_err());
    }
}
