//! webhook-ingest end to end: handlers called directly and through the HTTP
//! router, on in-memory fakes of the store and bus, plus the redelivery
//! sweeper against a stub GitHub.

use patchpanda_shared::github::signature;

#[test]
fn githubs_documented_test_vector() {
    assert_eq!(
        signature::sign(b"It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}
