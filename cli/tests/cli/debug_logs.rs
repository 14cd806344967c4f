//! DEBUG=true: verbose logs on stderr that never carry values.

use super::*;

#[test]
fn debug_logs_go_to_stderr_and_never_carry_values() {
    let sb = Sandbox::new();
    let value = b"debug-visible-secret-3c9d0e";
    seeded(&sb, &sb.home(), value, b"debug-key-material-77aa");

    let plain = sb.pp().run(&["secrets", "list", "--json"]).ok();
    let debug = sb
        .pp()
        .env("DEBUG", "true")
        .run(&["secrets", "list", "--json"])
        .ok();
    assert_eq!(debug.out, plain.out, "DEBUG changes nothing on stdout");
    debug.json();

    let r = sb
        .pp()
        .env("DEBUG", "true")
        .run(&["secrets", "access", "webhook-secret"])
        .ok();
    assert_eq!(r.out, value, "stdout is the value alone");
    assert!(
        !r.err.contains("debug-visible-secret"),
        "a value reached stderr: {}",
        r.err
    );
    let r = sb
        .pp()
        .env("DEBUG", "true")
        .run(&["secrets", "access", "github-private-key"])
        .ok();
    assert!(
        !r.err.contains("debug-key-material"),
        "a value reached stderr: {}",
        r.err
    );

    // A command that does I/O shows debug logs with DEBUG=true, on stderr only.
    let base = unused_port_base().to_string();
    let quiet = sb.pp().run(&["health", "--port-base", &base, "--json"]);
    quiet.fails_one_line();
    let loud = sb
        .pp()
        .env("DEBUG", "true")
        .run(&["health", "--port-base", &base, "--json"]);
    assert_eq!(loud.code, 1);
    assert!(
        loud.err.contains("DEBUG"),
        "no debug logs with DEBUG=true: {}",
        loud.err
    );
    assert!(loud.err.lines().count() > 1, "{}", loud.err);
    assert!(
        loud.err
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("patchpanda: ")),
        "{}",
        loud.err
    );
    let j = loud.json();
    assert_eq!(
        j.as_array().map(Vec::len),
        quiet.json().as_array().map(Vec::len),
        "stdout stays pure JSON"
    );
    assert!(
        !loud.err.contains("debug-visible-secret") && !loud.err.contains("debug-key-material"),
        "{}",
        loud.err
    );
}
