//! The caller's address for the `signature_rejected` log line, which
//! audit-alerter turns into alerts.
//!
//! Cloud Run sees only its front end's connection; the caller is in
//! `X-Forwarded-For`. A client can send that header itself, and each proxy
//! appends the address it saw, so only the entries the proxies appended are
//! trustworthy: with `hops` proxies in front of us (1 on Cloud Run's own
//! URL, 2 behind an external Application Load Balancer), the caller is the
//! `hops`-th entry from the end. The leftmost entry, which naive code takes,
//! is whatever the attacker wrote, and could blame GitHub's own addresses.
//! Anything that is not an IP address is reported as `unknown`, so a
//! crafted header never reaches an alert's text.

use std::net::IpAddr;

use http::HeaderMap;

/// What is logged when no address can be trusted.
pub const UNKNOWN: &str = "unknown";

/// The caller's IP address as the trusted proxies saw it.
pub fn remote_ip(headers: &HeaderMap, hops: usize) -> String {
    // Several X-Forwarded-For lines read as one comma-separated list.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if hops == 0 || entries.len() < hops {
        return UNKNOWN.to_string();
    }
    entries[entries.len() - hops]
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| UNKNOWN.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_entry_the_proxies_appended_not_the_callers() {
        assert_eq!(remote_ip(&xff(&["203.0.113.7"]), 1), "203.0.113.7");
        // The caller wrote the first entry; Cloud Run appended the second.
        assert_eq!(
            remote_ip(&xff(&["140.82.115.1, 203.0.113.7"]), 1),
            "203.0.113.7"
        );
        // Behind a load balancer: caller, then the balancer's own address.
        assert_eq!(
            remote_ip(&xff(&["140.82.115.1, 203.0.113.7, 34.1.2.3"]), 2),
            "203.0.113.7"
        );
        assert_eq!(
            remote_ip(&xff(&["140.82.115.1", "2001:db8::1"]), 1),
            "2001:db8::1"
        );
    }

    #[test]
    fn what_is_not_an_address_is_unknown() {
        assert_eq!(remote_ip(&HeaderMap::new(), 1), UNKNOWN);
        assert_eq!(remote_ip(&xff(&["203.0.113.7"]), 2), UNKNOWN);
        assert_eq!(remote_ip(&xff(&["all clear, see runbook"]), 1), UNKNOWN);
        assert_eq!(remote_ip(&xff(&["203.0.113.7"]), 0), UNKNOWN);
        assert_eq!(remote_ip(&xff(&["1.2.3.4, "]), 1), UNKNOWN);
    }
}
