//! `patchpanda health`: the runbook checks as a table.

use super::*;

fn table_rows(text: &str) -> BTreeMap<String, (String, String)> {
    // Columns are separated by two or more spaces; a check's name has single spaces.
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            (cols.len() >= 2).then(|| {
                (
                    cols[0].to_string(),
                    (cols[1].to_string(), cols.get(2).unwrap_or(&"").to_string()),
                )
            })
        })
        .collect()
}

#[test]
fn health_fails_clearly_when_functions_are_down() {
    let sb = Sandbox::new();
    seeded(
        &sb,
        &sb.home(),
        b"health-webhook-value",
        b"health-key-value",
    );
    let base = unused_port_base().to_string();

    let r = sb.pp().run(&["health", "--port-base", &base]);
    let line = r.fails_one_line();
    assert!(line.contains("health checks failed"), "{line}");
    let text = r.stdout();
    assert!(text.starts_with("CHECK"), "{text}");
    let rows = table_rows(&text);
    let (verdict, detail) = rows
        .get("webhook-ingest /health")
        .unwrap_or_else(|| panic!("no ingest row: {text}"));
    assert_eq!(verdict, "FAIL", "{text}");
    assert!(detail.contains("unreachable"), "{detail}");
    assert!(detail.contains(&base), "the detail names the URL: {detail}");
    for f in ["rotation-worker /health", "audit-alerter /health"] {
        assert_eq!(
            rows.get(f).map(|r| r.0.as_str()),
            Some("FAIL"),
            "{f}: {text}"
        );
    }
    for ok in [
        "secret webhook-secret",
        "secret github-private-key",
        "kms key",
        "bus",
    ] {
        assert_eq!(
            rows.get(ok).map(|r| r.0.as_str()),
            Some("OK"),
            "{ok}: {text}"
        );
    }
    assert_eq!(
        rows.get("secret oidc-client-secret").map(|r| r.0.as_str()),
        Some("SKIP"),
        "{text}"
    );
    assert!(
        !text.contains("health-webhook-value"),
        "health never prints values"
    );

    let r = sb.pp().run(&["health", "--port-base", &base, "--json"]);
    r.fails_one_line();
    let j = r.json();
    let checks = j.as_array().expect("array");
    assert_eq!(checks.len(), rows.len(), "same checks in both forms");
    for c in checks {
        let name = c["check"].as_str().expect("check");
        let verdict = c["result"].as_str().expect("result");
        assert_eq!(
            rows.get(name).map(|r| r.0.as_str()),
            Some(verdict),
            "{name}"
        );
        assert!(c["detail"].is_string());
    }
}

#[test]
fn health_passes_a_function_that_answers_and_fails_a_disabled_secret() {
    let sb = Sandbox::new();
    seeded(&sb, &sb.home(), b"w", b"k");
    let up = MiniServer::start(200, "ok");
    let base = unused_port_base().to_string();
    let r = sb.pp().run(&[
        "health",
        "--port-base",
        &base,
        "--ingest-url",
        &up.url(""),
        "--json",
    ]);
    r.fails_one_line();
    let j = r.json();
    let verdict = |name: &str| {
        j.as_array()
            .and_then(|a| a.iter().find(|c| c["check"] == name))
            .map(|c| c["result"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(verdict("webhook-ingest /health"), "OK", "{j}");
    assert_eq!(verdict("rotation-worker /health"), "FAIL", "{j}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/health")
    );

    // A current version that is disabled is a failed secret check.
    sb.pp()
        .run(&["secrets", "disable", "webhook-secret", "1"])
        .ok();
    let r = sb.pp().run(&["health", "--port-base", &base, "--json"]);
    r.fails_one_line();
    let j = r.json();
    let row = j
        .as_array()
        .and_then(|a| a.iter().find(|c| c["check"] == "secret webhook-secret"))
        .expect("row")
        .clone();
    assert_eq!(row["result"], "FAIL", "{row}");
    assert!(
        row["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{row}"
    );
}

#[test]
fn health_port_base_leaves_room_for_three_functions() {
    let sb = Sandbox::new();
    seeded(&sb, &sb.home(), b"w", b"k");
    let r = sb.pp().run(&["health", "--port-base", "65535", "--json"]);
    if r.code == 2 {
        return; // refused as a usage error: fine
    }
    let j = r.json();
    let detail = |name: &str| {
        j.as_array()
            .and_then(|a| a.iter().find(|c| c["check"] == name))
            .and_then(|c| c["detail"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    // BUG: the ports saturate, so all three checks probe 65535 and report
    // webhook-ingest's state as the worker's and the alerter's.
    assert!(
        !detail("rotation-worker /health").contains(":65535/"),
        "rotation-worker probed on webhook-ingest's port: {j}"
    );
}

#[test]
fn health_without_function_urls_names_flags_that_exist() {
    let sb = Sandbox::new();
    // gcp with no credentials: the backends fail at once, before any network.
    let r = sb
        .pp()
        .env("PATCHPANDA_BACKEND", "gcp")
        .env("GOOGLE_CLOUD_PROJECT", "patchpanda-test")
        .env(
            "GOOGLE_APPLICATION_CREDENTIALS",
            &sb.path("no-credentials.json").display().to_string(),
        )
        .env("CLOUDSDK_CONFIG", &sb.path("gcloud").display().to_string())
        .env("HOME", &sb.dir.path().display().to_string())
        .run(&["health", "--json"]);
    r.fails_one_line();
    let j = r.json();
    let help = sb.pp().run(&["health", "--help"]).ok().stdout();
    let mut skipped = 0;
    for c in j.as_array().expect("array") {
        if c["result"] != "SKIP" || !c["check"].as_str().unwrap_or_default().ends_with("/health") {
            continue;
        }
        skipped += 1;
        let detail = c["detail"].as_str().unwrap_or_default();
        let flag = detail
            .split_whitespace()
            .find(|w| w.starts_with("--"))
            .unwrap_or_else(|| panic!("no flag named: {detail}"));
        // BUG: it says --webhook-url, --rotation-url, --audit-url; the flags
        // are --ingest-url, --worker-url, --alerter-url.
        assert!(
            help.contains(flag),
            "{}: the hint names {flag}, which `health` does not have",
            c["check"]
        );
    }
    assert_eq!(skipped, 3, "{j}");
}

#[test]
fn health_on_gcp_probes_the_private_services_with_an_id_token() {
    let sb = Sandbox::new();
    let (adc, oauth) = gcloud_user_adc(&sb);
    let services: Vec<MiniServer> = (0..3)
        .map(|_| MiniServer::requiring_bearer(GOOGLE_ID_TOKEN, 200, "ok"))
        .collect();
    let r = sb
        .pp()
        .env("PATCHPANDA_BACKEND", "gcp")
        .env("GOOGLE_CLOUD_PROJECT", "patchpanda-test-p1")
        .env("GOOGLE_APPLICATION_CREDENTIALS", adc.to_str().unwrap())
        .env("HOME", sb.path("no-home").to_str().unwrap())
        .run(&[
            "health",
            "--ingest-url",
            &services[0].url(""),
            "--worker-url",
            &services[1].url("/"),
            "--alerter-url",
            &services[2].url(""),
            "--timeout",
            "1s",
        ]);
    // Secret Manager, KMS and Pub/Sub are out of reach here: those rows
    // fail (within --timeout); the function rows are what this test is about.
    assert_eq!(r.code, 1, "{}", r.err);
    let text = r.stdout();
    let rows = table_rows(&text);
    for name in ["webhook-ingest", "rotation-worker", "audit-alerter"] {
        let (verdict, detail) = rows
            .get(&format!("{name} /health"))
            .unwrap_or_else(|| panic!("no {name} row: {text}"));
        assert_eq!(verdict, "OK", "{name}: {detail}\n{text}");
        assert!(detail.ends_with("answered 200"), "{detail}");
    }
    for s in &services {
        let seen = s.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].path, "/health");
        assert_eq!(
            seen[0].headers.get("authorization").map(String::as_str),
            Some(format!("Bearer {GOOGLE_ID_TOKEN}").as_str())
        );
    }
    assert!(
        oauth.seen().iter().all(|s| s.path == "/token"),
        "{:?}",
        oauth.seen()
    );
    assert!(
        !text.contains(GOOGLE_ID_TOKEN),
        "the token is never printed"
    );
}
