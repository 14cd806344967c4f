//! `patchpanda token`: OIDC ID tokens for push and scheduler endpoints.

use super::*;

#[test]
fn token_is_a_local_oidc_id_token_for_the_audience() {
    let sb = Sandbox::new();
    let aud = "https://rotation-worker.example.test/tasks/finish";
    let r = sb.pp().run(&["token", "--audience", aud]).ok();
    let text = r.stdout();
    let token = text.trim_end();
    assert_eq!(text.lines().count(), 1, "{text}");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let header = b64url_json(parts[0]);
    assert_eq!(header["alg"], "RS256");
    assert!(header["kid"].is_string());
    let claims = b64url_json(parts[1]);
    assert_eq!(claims["iss"], "https://issuer.patchpanda.local");
    assert_eq!(claims["aud"], aud);
    assert_eq!(claims["email"], "operator@patchpanda.local");
    assert_eq!(claims["email_verified"], true);
    let (iat, exp) = (
        claims["iat"].as_u64().expect("iat"),
        claims["exp"].as_u64().expect("exp"),
    );
    assert_eq!(exp - iat, 3600, "default lifetime 1h");
    assert!(!parts[2].is_empty());

    // The issuer key persists: a second token has the same kid.
    let again = sb
        .pp()
        .run(&["token", "--audience", aud, "--ttl", "90s"])
        .ok()
        .stdout();
    let again: Vec<&str> = again.trim_end().split('.').collect();
    assert_eq!(b64url_json(again[0])["kid"], header["kid"]);
    let c2 = b64url_json(again[1]);
    assert_eq!(
        c2["exp"].as_u64().unwrap_or(0) - c2["iat"].as_u64().unwrap_or(0),
        90
    );

    // PATCHPANDA_PRINCIPAL is who the token is for.
    let other = sb
        .pp()
        .env("PATCHPANDA_PRINCIPAL", "someone@patchpanda.local")
        .run(&["token", "--audience", aud])
        .ok()
        .stdout();
    let other: Vec<&str> = other.trim_end().split('.').collect();
    assert_eq!(b64url_json(other[1])["email"], "someone@patchpanda.local");

    for bad in ["not a url", ""] {
        let r = sb.pp().run(&["token", "--audience", bad]);
        assert!(r.code == 1 || r.code == 2, "{bad:?}: {r:?}");
        if r.code == 1 {
            let line = r.fails_one_line();
            assert!(line.contains("audience"), "{line}");
        }
        assert!(r.out.is_empty(), "no token for a bad audience");
    }
}

#[test]
fn token_on_gcp_works_with_gcloud_user_credentials() {
    // google-cloud-auth's ADC builder refuses `authorized_user` for ID
    // tokens; an operator logged in with gcloud must still get one.
    let sb = Sandbox::new();
    let (adc, oauth) = gcloud_user_adc(&sb);
    let r = sb
        .pp()
        .env("PATCHPANDA_BACKEND", "gcp")
        .env("GOOGLE_CLOUD_PROJECT", "patchpanda-test-p1")
        .env("GOOGLE_APPLICATION_CREDENTIALS", adc.to_str().unwrap())
        .run(&[
            "token",
            "--audience",
            "https://patchpanda-rotation-worker-1.us-central1.run.app",
        ]);
    assert_eq!(r.ok().stdout().trim(), GOOGLE_ID_TOKEN);
    let seen = oauth.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert!(contains(&seen[0].body, b"1//refresh"));
}
