//! Where the service may connect on behalf of a caller: the outbound policy for project
//! databases (`database_url`).
//!
//! Anyone who may call ConfigureIntegration chooses a host and a port, and the service
//! connects there from inside the operator's network. Without a policy that is a port scanner
//! (and a way to reach services listening on loopback). So, outside dev mode, loopback,
//! link-local (169.254/16, fe80::/10: cloud metadata lives there), unspecified, multicast and
//! broadcast destinations and Unix sockets are refused; operators add exceptions with
//! `CAPYDB_AUTH_SYNC_DATABASE_ALLOW` (CIDRs, host names, or `unix`) and further refusals with
//! `CAPYDB_AUTH_SYNC_DATABASE_DENY` (CIDRs; `0.0.0.0/0,::/0` turns the allow list into the only
//! destinations permitted). An allow entry wins over every deny.
//!
//! DNS rebinding: a name checked at Configure time may resolve elsewhere later. So the check
//! runs again on every new connection, and the connection goes to the very address that was
//! checked (tokio-postgres `hostaddr`; the host name is still used for TLS), never to a second
//! resolution. Re-checking only, and then letting the driver resolve again, would leave a
//! window between the two lookups.
use ipnet::IpNet;
use std::net::IpAddr;
use std::time::Duration;

/// How long a host name may take to resolve (the system resolver has no deadline of its own).
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// One allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// Addresses in this network.
    Net(IpNet),
    /// This host name exactly as written in the URL (case-insensitive), whatever it resolves to.
    Host(String),
    /// Unix-domain sockets.
    Unix,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OutboundConfigError {
    #[error("`{0}` is neither a CIDR (10.0.0.0/8), an IP address, a host name, nor `unix`")]
    Allow(String),
    #[error("`{0}` is not a CIDR (10.0.0.0/8) or an IP address")]
    Deny(String),
}

/// Why a destination is refused. The text goes to the caller: it names the class of the
/// destination, never a resolved address.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("Unix-domain sockets are not allowed as project databases (see CAPYDB_AUTH_SYNC_DATABASE_ALLOW)")]
    UnixSocket,
    #[error("the host is (or resolves to) a {0} address, which is not allowed (see CAPYDB_AUTH_SYNC_DATABASE_ALLOW)")]
    Reserved(&'static str),
    #[error("the host is (or resolves to) an address refused by CAPYDB_AUTH_SYNC_DATABASE_DENY")]
    Denied,
    #[error("the host name does not resolve (or not within 5 s)")]
    Unresolvable,
    #[error("only one host is supported")]
    SeveralHosts,
}

/// The checked place to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Connect to this address (the host name stays for TLS).
    Tcp(IpAddr),
    /// A Unix socket (allowed by the policy).
    Unix,
}

#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Dev mode: loopback, link-local and Unix sockets are allowed.
    pub allow_local: bool,
    pub allow: Vec<AllowRule>,
    pub deny: Vec<IpNet>,
}

impl OutboundPolicy {
    /// Dev mode's policy: everything allowed except what `deny` names.
    pub fn dev() -> Self {
        OutboundPolicy { allow_local: true, ..Default::default() }
    }

    /// Parses `CAPYDB_AUTH_SYNC_DATABASE_ALLOW` (comma-separated CIDRs, IPs, host names, `unix`).
    pub fn parse_allow(list: &str) -> Result<Vec<AllowRule>, OutboundConfigError> {
        entries(list)
            .map(|e| {
                if e.eq_ignore_ascii_case("unix") {
                    Ok(AllowRule::Unix)
                } else if let Some(net) = parse_net(e) {
                    Ok(AllowRule::Net(net))
                } else if is_host_name(e) {
                    Ok(AllowRule::Host(e.to_ascii_lowercase()))
                } else {
                    Err(OutboundConfigError::Allow(e.to_string()))
                }
            })
            .collect()
    }

    /// Parses `CAPYDB_AUTH_SYNC_DATABASE_DENY` (comma-separated CIDRs or IPs).
    pub fn parse_deny(list: &str) -> Result<Vec<IpNet>, OutboundConfigError> {
        entries(list).map(|e| parse_net(e).ok_or_else(|| OutboundConfigError::Deny(e.to_string()))).collect()
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allow.iter().any(|r| matches!(r, AllowRule::Host(h) if h.eq_ignore_ascii_case(host)))
    }

    /// Is `ip` (reached through `host`) an allowed destination?
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        let ip = canonical(ip);
        if self.host_allowed(host) || self.allow.iter().any(|r| matches!(r, AllowRule::Net(n) if n.contains(&ip))) {
            return Ok(());
        }
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::Denied);
        }
        match reserved_class(ip) {
            Some(class) if !self.allow_local => Err(Refusal::Reserved(class)),
            _ => Ok(()),
        }
    }

    /// Resolves and checks the destination of `cfg` (its `hostaddr` when given, else its
    /// host); returns the first allowed address to connect to. Every resolved address must
    /// pass: a name that resolves to a public and a loopback address is refused.
    pub async fn destination(&self, cfg: &tokio_postgres::Config) -> Result<Destination, Refusal> {
        let hosts = cfg.get_hosts();
        if hosts.len() > 1 || cfg.get_hostaddrs().len() > 1 {
            return Err(Refusal::SeveralHosts);
        }
        let host = match hosts.first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.as_str(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(_)) => {
                return if self.allow_local || self.allow.contains(&AllowRule::Unix) {
                    Ok(Destination::Unix)
                } else {
                    Err(Refusal::UnixSocket)
                };
            }
            None => "",
        };
        if let Some(ip) = cfg.get_hostaddrs().first() {
            self.check_ip(host, *ip)?;
            return Ok(Destination::Tcp(*ip));
        }
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            self.check_ip(host, ip)?;
            return Ok(Destination::Tcp(ip));
        }
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let lookup = tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host, port)));
        let addrs: Vec<IpAddr> = lookup
            .await
            .map_err(|_| Refusal::Unresolvable)?
            .map_err(|_| Refusal::Unresolvable)?
            .map(|a| a.ip())
            .collect();
        let first = *addrs.first().ok_or(Refusal::Unresolvable)?;
        for ip in &addrs {
            self.check_ip(host, *ip)?;
        }
        Ok(Destination::Tcp(first))
    }
}

fn entries(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|e| !e.is_empty())
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>().ok().or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

fn is_host_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
        })
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are checked as the IPv4 address they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The class of a destination refused by default, if it is one.
fn reserved_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.octets()[0] == 0 => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_multicast() || v4.is_broadcast() => Some("multicast or broadcast"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast or broadcast"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> tokio_postgres::Config {
        url.parse().unwrap()
    }

    #[tokio::test]
    async fn local_destinations_are_refused_by_default_and_allowed_in_dev_mode() {
        let strict = OutboundPolicy::default();
        for (url, class) in [
            ("postgres://u@127.0.0.1/db", "loopback"),
            ("postgres://u@127.8.9.10/db", "loopback"),
            ("postgres://u@[::1]/db", "loopback"),
            ("postgres://u@[::ffff:127.0.0.1]/db", "loopback"),
            ("postgres://u@169.254.169.254/db", "link-local"),
            ("postgres://u@[fe80::1]/db", "link-local"),
            ("postgres://u@0.0.0.0/db", "unspecified"),
            ("postgres://u@localhost/db", "loopback"),
            ("postgres://u@203.0.113.9/db?hostaddr=127.0.0.1", "loopback"),
        ] {
            assert_eq!(strict.destination(&cfg(url)).await, Err(Refusal::Reserved(class)), "{url}");
            assert!(OutboundPolicy::dev().destination(&cfg(url)).await.is_ok(), "{url}");
        }
        assert_eq!(strict.destination(&cfg("postgres://u@%2Frun%2Fpg/db")).await, Err(Refusal::UnixSocket));
        assert_eq!(
            strict.destination(&cfg("postgres://u@203.0.113.9:6543/db")).await,
            Ok(Destination::Tcp("203.0.113.9".parse().unwrap()))
        );
    }

    #[tokio::test]
    async fn the_allow_list_wins_over_every_deny() {
        let policy = OutboundPolicy {
            allow_local: false,
            allow: OutboundPolicy::parse_allow("127.0.0.1/32, 10.1.0.0/16,db.internal,unix").unwrap(),
            deny: OutboundPolicy::parse_deny("0.0.0.0/0,::/0").unwrap(),
        };
        assert!(policy.destination(&cfg("postgres://u@127.0.0.1/db")).await.is_ok());
        assert!(policy.destination(&cfg("postgres://u@10.1.2.3/db")).await.is_ok());
        assert!(policy.destination(&cfg("postgres://u@%2Frun%2Fpg/db")).await.is_ok());
        assert_eq!(policy.check_ip("db.internal", "10.9.9.9".parse().unwrap()), Ok(()));
        assert_eq!(policy.destination(&cfg("postgres://u@10.2.0.1/db")).await, Err(Refusal::Denied));
        assert_eq!(policy.destination(&cfg("postgres://u@127.0.0.2/db")).await, Err(Refusal::Denied));
    }

    #[test]
    fn bad_list_entries_are_named() {
        assert_eq!(OutboundPolicy::parse_allow("10.0.0.0/33"), Err(OutboundConfigError::Allow("10.0.0.0/33".into())));
        assert_eq!(OutboundPolicy::parse_allow("a b"), Err(OutboundConfigError::Allow("a b".into())));
        assert_eq!(OutboundPolicy::parse_deny("db.internal"), Err(OutboundConfigError::Deny("db.internal".into())));
        assert!(OutboundPolicy::parse_allow("").unwrap().is_empty());
    }
}
