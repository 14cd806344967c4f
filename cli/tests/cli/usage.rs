//! Help, usage errors, and one-line failures.

use super::*;

#[test]
fn every_command_has_help_that_says_what_it_does() {
    let sb = Sandbox::new();
    let cases: &[(&[&str], &str)] = &[
        (&[], "operate patchpanda gateway"),
        (&["dev"], "local stack"),
        (&["secrets"], "secrets"),
        (&["secrets", "list"], "aliases"),
        (&["secrets", "versions"], "versions"),
        (&["secrets", "add"], "new version"),
        (&["secrets", "access"], "value"),
        (&["secrets", "enable"], "enable"),
        (&["secrets", "disable"], "disable"),
        (&["secrets", "destroy"], "destroy"),
        (&["rotate"], "rotate"),
        (&["rollback"], "previous"),
        (&["status"], "current"),
        (&["backup"], "kms key"),
        (&["restore"], "backup"),
        (&["health"], "health checks"),
        (&["webhook"], "webhook"),
        (&["webhook", "sign"], "x-hub-signature-256"),
        (&["webhook", "send"], "signed"),
        (&["bus"], "bus"),
        (&["bus", "messages"], "messages"),
        (&["token"], "oidc id token"),
    ];
    for (path, purpose) in cases {
        let mut args: Vec<&str> = path.to_vec();
        args.push("--help");
        let r = sb.pp().run(&args).ok();
        let text = r.stdout().to_lowercase();
        assert!(text.contains("usage:"), "{args:?}: {text}");
        assert!(
            text.contains(purpose),
            "`{}` help should mention {purpose:?}: {text}",
            args.join(" ")
        );
    }
    assert!(
        !sb.home().exists(),
        "--help must not create PATCHPANDA_HOME"
    );
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    let bad: &[&[&str]] = &[
        &[],
        &["no-such-command"],
        &["secrets"],
        &["secrets", "add", "webhook-secret"],
        &["secrets", "enable", "webhook-secret", "two"],
        &["secrets", "access"],
        &["backup"],
        &["token"],
        &["token", "--audience", "https://x.test/", "--ttl", "0s"],
        &["token", "--audience", "https://x.test/", "--ttl", "48h"],
        &["health", "--port-base", "70000"],
        &["webhook", "sign"],
        &["bus", "messages"],
        &["status", "--bogus"],
    ];
    for args in bad {
        sb.pp().run(args).usage_error();
    }
    assert!(
        !sb.home().exists(),
        "a usage error must not create PATCHPANDA_HOME"
    );
}

#[test]
fn unknown_secret_fails_with_one_clear_line() {
    let sb = Sandbox::new();
    seeded(&sb, &sb.home(), b"wh", b"key");
    let line = sb
        .pp()
        .run(&["secrets", "access", "no-such-secret"])
        .fails_one_line();
    assert!(line.contains("not found"), "{line}");
    assert!(
        line.contains("no-such-secret"),
        "the line names the secret: {line}"
    );
    let r = sb.pp().run(&["secrets", "access", "no-such-secret"]);
    assert!(r.out.is_empty(), "nothing on stdout on failure");
    sb.pp()
        .run(&["secrets", "versions", "no-such-secret"])
        .fails_one_line();
    sb.pp()
        .run(&["secrets", "disable", "no-such-secret", "1"])
        .fails_one_line();
    sb.pp()
        .run(&["secrets", "disable", "webhook-secret", "9"])
        .fails_one_line();
}

#[test]
fn dev_fails_clearly_when_it_cannot_start() {
    let sb = Sandbox::new();
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port().to_string();
    let r = sb.pp().run(&["dev", "--port-base", &port]);
    assert_eq!(r.code, 1, "{r:?}");
    let last = r.err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("patchpanda: ") && last.contains(&port) && last.contains("--port-base"),
        "{}",
        r.err
    );
    assert!(
        r.out.is_empty(),
        "no banner when the stack is not up: {}",
        r.stdout()
    );

    let r = sb
        .pp()
        .env("PATCHPANDA_BACKEND", "gcp")
        .env("GOOGLE_CLOUD_PROJECT", "p")
        .run(&["dev"]);
    let line = r.fails_one_line();
    assert!(line.contains("local"), "{line}");
}

#[test]
fn a_bad_environment_fails_with_one_line_naming_the_variable() {
    let sb = Sandbox::new();
    let line = sb
        .pp()
        .env("DEBUG", "maybe")
        .run(&["secrets", "list"])
        .fails_one_line();
    assert!(line.contains("DEBUG"), "{line}");
    let line = sb
        .pp()
        .env("PATCHPANDA_BACKEND", "cloudy")
        .run(&["secrets", "list"])
        .fails_one_line();
    assert!(line.contains("PATCHPANDA_BACKEND"), "{line}");
    let file = sb.file("not-a-folder", b"x");
    let line = Pp::new(&file).run(&["secrets", "list"]).fails_one_line();
    assert!(line.contains("PATCHPANDA_HOME"), "{line}");
}
