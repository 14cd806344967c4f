//! Who made a call. An audit entry names the caller in `principalEmail`
//! and/or `principalSubject`; when the caller impersonated a service account
//! (Token Creator, or workload identity federation then impersonation), the
//! entry names the *account* there and the real caller in
//! `authenticationInfo.serviceAccountDelegationInfo[]`, first party first
//! (AuthenticationInfo in google/cloud/audit/audit_log.proto). Every
//! allow-list check judges the whole chain: a reader impersonated by an
//! outsider is the outsider.

use std::collections::HashSet;

use patchpanda_shared::audit_log::LogEntry;
use serde_json::Value;

/// Identities, compared case-insensitively and without the `user:` /
/// `serviceAccount:` prefixes IAM members carry. Emails, federated
/// subjects (`principal://...`) and service accounts' numeric unique ids
/// are all names here, compared the same way. `*@domain` matches a domain.
#[derive(Debug, Clone, Default)]
pub struct PrincipalSet {
    exact: HashSet<String>,
    domains: Vec<String>,
}

impl PrincipalSet {
    pub fn new<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Self {
        let mut set = Self::default();
        set.extend(items);
        set
    }

    pub fn extend<S: AsRef<str>>(&mut self, items: impl IntoIterator<Item = S>) {
        for item in items {
            let p = normalize_principal(item.as_ref());
            if p.is_empty() {
                continue;
            }
            if let Some(domain) = p.strip_prefix('*') {
                // `*@d` and `*d` both mean "emails at exactly d".
                let domain = domain.trim_start_matches('@');
                if !domain.is_empty() {
                    self.domains.push(domain.to_string());
                }
            } else {
                self.exact.insert(p);
            }
        }
    }

    /// `principal` must already be normalized (see [`normalize_principal`]).
    /// A domain matches only a plain email's whole domain: a federated
    /// subject (`principal://.../subject/x@d`) or a claim merely ending in
    /// `@d` is not at `d`.
    pub fn contains(&self, principal: &str) -> bool {
        self.exact.contains(principal)
            || email_domain(principal).is_some_and(|d| self.domains.iter().any(|x| x == d))
    }

    /// Whether any of one party's names is in the set.
    pub fn contains_any<S: AsRef<str>>(&self, names: &[S]) -> bool {
        names.iter().any(|n| self.contains(n.as_ref()))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.domains.is_empty()
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.domains.len()
    }
}

/// The domain of a plain email `local@domain` (no scheme, path or second
/// `@`), else None.
fn email_domain(p: &str) -> Option<&str> {
    let (local, domain) = p.split_once('@')?;
    let plain = |s: &str| {
        !s.is_empty() && !s.contains(['@', '/', ':']) && !s.chars().any(char::is_whitespace)
    };
    (plain(local) && plain(domain)).then_some(domain)
}

/// Lower-cased, without an IAM member-type prefix; a service account named
/// by resource (`projects/-/serviceAccounts/X`,
/// `//iam.googleapis.com/projects/P/serviceAccounts/X`) becomes `X`, its
/// email or numeric unique id.
pub fn normalize_principal(p: &str) -> String {
    let p = p.trim();
    let p = p
        .strip_prefix("serviceAccount:")
        .or_else(|| p.strip_prefix("user:"))
        .unwrap_or(p);
    // Only the two resource forms Google writes; anything else merely
    // containing `/serviceAccounts/` (a federated subject, a claim) stays
    // whole, so it cannot pass for the account it names.
    let resource = p
        .strip_prefix("//iam.googleapis.com/")
        .unwrap_or(p)
        .strip_prefix("projects/")
        .and_then(|rest| rest.split_once("/serviceAccounts/"))
        .map(|(project, account)| (project, account.split('/').next().unwrap_or(account)));
    let p = match resource {
        Some((project, account)) if !project.contains('/') && !account.is_empty() => account,
        _ => p,
    };
    p.to_ascii_lowercase()
}

/// One party of a call: its display name and every name it goes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub name: String,
    pub names: Vec<String>,
}

impl Party {
    fn from_names(mut names: Vec<String>) -> Option<Self> {
        names.retain(|n| !n.is_empty());
        names.dedup();
        let name = names.first()?.clone();
        Some(Self { name, names })
    }
}

/// The caller of one audited call and the chain it acted through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The caller as the entry names it (normalized), `unknown` if none.
    pub caller: Party,
    /// Who delegated to the caller, first party (the real origin) first.
    /// Hops that name nobody (`[{}]`, seen on direct federated calls) are
    /// left out: there is no one to judge.
    pub chain: Vec<Party>,
}

impl Identity {
    pub fn of(entry: &LogEntry) -> Self {
        let auth = entry
            .proto_payload
            .as_ref()
            .and_then(|p| p.authentication_info.as_ref());
        let chain: Vec<Party> = auth
            .and_then(|a| a.service_account_delegation_info.as_ref())
            .and_then(Value::as_array)
            .map(|hops| hops.iter().filter_map(hop).collect())
            .unwrap_or_default();
        let names: Vec<String> = auth
            .map(|a| {
                [a.principal_email.as_deref(), a.principal_subject.as_deref()]
                    .into_iter()
                    .flatten()
                    .map(normalize_principal)
                    .collect()
            })
            .unwrap_or_default();
        let caller = Party::from_names(names)
            .or_else(|| chain.first().cloned())
            .unwrap_or_else(|| Party {
                name: "unknown".into(),
                names: Vec::new(),
            });
        Self { caller, chain }
    }

    /// The caller's normalized name.
    pub fn principal(&self) -> &str {
        &self.caller.name
    }

    /// The party to name in an alert: the first party of the chain (the
    /// real origin of the call), else the caller.
    pub fn origin(&self) -> &str {
        self.chain.first().map_or(&self.caller.name, |p| &p.name)
    }

    /// The first party, origin first, that `set` does not allow; None when
    /// the caller and everyone it acted for are allowed.
    pub fn first_outsider(&self, set: &PrincipalSet) -> Option<&str> {
        self.chain
            .iter()
            .chain(std::iter::once(&self.caller))
            .find(|p| !set.contains_any(&p.names))
            .map(|p| p.name.as_str())
    }

    /// Whether the caller and its whole chain are in `set`.
    pub fn allowed(&self, set: &PrincipalSet) -> bool {
        self.first_outsider(set).is_none()
    }

    /// `a (acting as b)` when a chain is involved, for summaries.
    pub fn describe(&self) -> String {
        if self.chain.is_empty() {
            self.caller.name.clone()
        } else {
            format!("{} (acting as {})", self.origin(), self.caller.name)
        }
    }

    /// The chain as `a -> b -> caller`, for alert details.
    pub fn chain_text(&self) -> Option<String> {
        (!self.chain.is_empty()).then(|| {
            self.chain
                .iter()
                .chain(std::iter::once(&self.caller))
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(" -> ")
        })
    }
}

/// One ServiceAccountDelegationInfo: `firstPartyPrincipal.principalEmail`
/// or `thirdPartyPrincipal.thirdPartyClaims` (its `sub`), plus the hop's
/// own `principalSubject`.
fn hop(v: &Value) -> Option<Party> {
    let google = [
        v.pointer("/firstPartyPrincipal/principalEmail"),
        v.get("principalSubject"),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str)
    .map(normalize_principal);
    // Claims are whatever the external identity provider wrote: they name
    // the party, but under a prefix no allow-list entry of an email,
    // subject or account id equals, so `sub: gw@p.iam.gserviceaccount.com`
    // is not the gateway's account.
    let claims = [
        (
            "sub",
            v.pointer("/thirdPartyPrincipal/thirdPartyClaims/sub"),
        ),
        (
            "email",
            v.pointer("/thirdPartyPrincipal/thirdPartyClaims/email"),
        ),
    ]
    .into_iter()
    .filter_map(|(claim, value)| Some((claim, value?.as_str()?)))
    .map(|(claim, value)| format!("thirdparty-{claim}:{}", value.trim().to_ascii_lowercase()));
    Party::from_names(google.chain(claims).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(auth: &str) -> LogEntry {
        serde_json::from_str(&format!(
            r#"{{"protoPayload":{{"authenticationInfo":{auth}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn principals_compare_without_member_prefixes_or_resource_forms() {
        let set = PrincipalSet::new([
            "serviceAccount:Gw@P.iam.gserviceaccount.com",
            "*@corp.example",
            "114885146936855121342",
        ]);
        assert!(set.contains(&normalize_principal("gw@p.iam.gserviceaccount.com")));
        assert!(set.contains(&normalize_principal("user:alice@corp.example")));
        assert!(!set.contains(&normalize_principal("mallory@evil.example")));
        assert!(set.contains(&normalize_principal(
            "projects/-/serviceAccounts/114885146936855121342"
        )));
        assert!(set.contains(&normalize_principal(
            "//iam.googleapis.com/projects/p/serviceAccounts/GW@p.iam.gserviceaccount.com"
        )));
        assert_eq!(
            normalize_principal(
                "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/gh/subject/Repo"
            ),
            "principal://iam.googleapis.com/projects/1/locations/global/workloadidentitypools/gh/subject/repo"
        );
    }

    #[test]
    fn a_name_merely_containing_an_allowed_one_does_not_match() {
        let set = PrincipalSet::new([
            "gw@p.iam.gserviceaccount.com",
            "*@gcp-sa-secretmanager.iam.gserviceaccount.com",
            "*corp.example",
        ]);
        for forged in [
            // Federated subjects an outside identity provider chooses.
            "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/x@gcp-sa-secretmanager.iam.gserviceaccount.com",
            "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/gw@p.iam.gserviceaccount.com",
            "evil/serviceAccounts/gw@p.iam.gserviceaccount.com",
            "projects/x/evil/serviceAccounts/gw@p.iam.gserviceaccount.com",
            // Prefix, suffix and domain tricks.
            "gw@p.iam.gserviceaccount.com.evil.example",
            "xgw@p.iam.gserviceaccount.com",
            "mallory@evilcorp.example",
            "a@b@corp.example",
            "@corp.example",
            "mallory@sub.corp.example",
        ] {
            assert!(!set.contains(&normalize_principal(forged)), "{forged}");
        }
        assert!(set.contains(&normalize_principal("Alice@Corp.Example")));
        assert!(set.contains(&normalize_principal(
            "service-123@gcp-sa-secretmanager.iam.gserviceaccount.com"
        )));
    }

    #[test]
    fn third_party_claims_never_pass_for_an_allowed_name() {
        let set = PrincipalSet::new(["gw@p.iam.gserviceaccount.com", "*@corp.example"]);
        for claims in [
            r#"{"sub":"gw@p.iam.gserviceaccount.com"}"#,
            r#"{"sub":"projects/-/serviceAccounts/gw@p.iam.gserviceaccount.com"}"#,
            r#"{"email":"alice@corp.example"}"#,
        ] {
            let e = entry(&format!(
                r#"{{"principalEmail":"gw@p.iam.gserviceaccount.com","serviceAccountDelegationInfo":[{{"thirdPartyPrincipal":{{"thirdPartyClaims":{claims}}}}}]}}"#
            ));
            let id = Identity::of(&e);
            assert_eq!(id.chain.len(), 1, "{claims}");
            assert!(!id.allowed(&set), "{claims}");
        }
    }

    #[test]
    fn the_chain_is_judged_origin_first() {
        let readers = PrincipalSet::new(["gw@p.iam.gserviceaccount.com"]);
        let direct = entry(r#"{"principalEmail":"gw@p.iam.gserviceaccount.com"}"#);
        let id = Identity::of(&direct);
        assert!(id.allowed(&readers));
        assert_eq!(id.origin(), "gw@p.iam.gserviceaccount.com");
        let impersonated = entry(
            r#"{"principalEmail":"gw@p.iam.gserviceaccount.com","serviceAccountDelegationInfo":[{"firstPartyPrincipal":{"principalEmail":"Mallory@Example.com"}}]}"#,
        );
        let id = Identity::of(&impersonated);
        assert!(!id.allowed(&readers));
        assert_eq!(id.first_outsider(&readers), Some("mallory@example.com"));
        assert_eq!(id.origin(), "mallory@example.com");
        assert_eq!(
            id.describe(),
            "mallory@example.com (acting as gw@p.iam.gserviceaccount.com)"
        );
        let federated = entry(
            r#"{"principalEmail":"gw@p.iam.gserviceaccount.com","serviceAccountDelegationInfo":[{"principalSubject":"principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/gh/subject/x"}]}"#,
        );
        assert!(
            Identity::of(&federated)
                .first_outsider(&readers)
                .unwrap()
                .starts_with("principal://")
        );
        let empty_hop = entry(
            r#"{"principalSubject":"principal://iam.googleapis.com/x","serviceAccountDelegationInfo":[{}]}"#,
        );
        let id = Identity::of(&empty_hop);
        assert!(id.chain.is_empty());
        assert_eq!(id.principal(), "principal://iam.googleapis.com/x");
        let only_chain = entry(
            r#"{"serviceAccountDelegationInfo":[{"firstPartyPrincipal":{"principalEmail":"A@b.c"}}]}"#,
        );
        assert_eq!(Identity::of(&only_chain).principal(), "a@b.c");
        assert_eq!(Identity::of(&LogEntry::default()).principal(), "unknown");
    }
}
