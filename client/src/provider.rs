//! Owns the mapping between provider names as people type them (`clerk`, `auth0`,
//! `better_auth` / `better-auth`) and the proto enum [`Provider`], plus the webhook path
//! segment of each provider.

use std::fmt;
use std::str::FromStr;

use crate::pb::Provider;

/// A provider name that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?}: expected one of clerk, auth0, better_auth")]
pub struct ParseProviderError(pub String);

/// Parses a provider name: `clerk`, `auth0`, `better_auth` or `better-auth` (case-insensitive;
/// the proto names `PROVIDER_CLERK`, … are accepted too). `unspecified` is rejected.
pub fn parse_provider(s: &str) -> Result<Provider, ParseProviderError> {
    let norm = s.trim().to_ascii_lowercase().replace('-', "_");
    let norm = norm.strip_prefix("provider_").unwrap_or(&norm);
    match norm {
        "clerk" => Ok(Provider::Clerk),
        "auth0" => Ok(Provider::Auth0),
        "better_auth" | "betterauth" => Ok(Provider::BetterAuth),
        _ => Err(ParseProviderError(s.to_string())),
    }
}

/// The control-plane name of a provider: `clerk`, `auth0`, `better_auth` (`unspecified` for
/// [`Provider::Unspecified`]).
pub fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Unspecified => "unspecified",
        Provider::Clerk => "clerk",
        Provider::Auth0 => "auth0",
        Provider::BetterAuth => "better_auth",
    }
}

/// The webhook URL path segment of a provider: `clerk`, `auth0`, `better-auth`
/// (`None` for [`Provider::Unspecified`]).
pub fn webhook_segment(p: Provider) -> Option<&'static str> {
    match p {
        Provider::Unspecified => None,
        Provider::Clerk => Some("clerk"),
        Provider::Auth0 => Some("auth0"),
        Provider::BetterAuth => Some("better-auth"),
    }
}

/// A parsed provider name, usable as a clap argument (`#[arg(value_parser = ProviderArg::from_str)]`
/// or plainly, since it implements `FromStr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProviderArg(pub Provider);

impl ProviderArg {
    /// The proto enum.
    pub fn provider(self) -> Provider {
        self.0
    }

    /// The proto enum as the `i32` stored in request messages.
    pub fn as_i32(self) -> i32 {
        self.0 as i32
    }
}

impl FromStr for ProviderArg {
    type Err = ParseProviderError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_provider(s).map(ProviderArg)
    }
}

impl fmt::Display for ProviderArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(provider_name(self.0))
    }
}

impl From<ProviderArg> for Provider {
    fn from(p: ProviderArg) -> Self {
        p.0
    }
}

impl From<Provider> for ProviderArg {
    fn from(p: Provider) -> Self {
        ProviderArg(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_spellings() {
        for (s, p) in [
            ("clerk", Provider::Clerk),
            ("CLERK", Provider::Clerk),
            ("auth0", Provider::Auth0),
            ("Auth0", Provider::Auth0),
            ("better_auth", Provider::BetterAuth),
            ("better-auth", Provider::BetterAuth),
            ("Better-Auth", Provider::BetterAuth),
            ("PROVIDER_BETTER_AUTH", Provider::BetterAuth),
            ("PROVIDER_CLERK", Provider::Clerk),
            (" auth0 ", Provider::Auth0),
        ] {
            assert_eq!(parse_provider(s), Ok(p), "{s}");
            assert_eq!(s.parse::<ProviderArg>().map(Provider::from), Ok(p), "{s}");
        }
    }

    #[test]
    fn rejects_unknown_and_unspecified() {
        for s in ["", "okta", "unspecified", "PROVIDER_UNSPECIFIED", "clerk2", "better auth"] {
            let err = parse_provider(s).unwrap_err();
            assert!(err.to_string().contains("clerk, auth0, better_auth"), "{err}");
        }
    }

    #[test]
    fn names_round_trip() {
        for p in [Provider::Clerk, Provider::Auth0, Provider::BetterAuth] {
            assert_eq!(parse_provider(provider_name(p)), Ok(p));
            assert_eq!(parse_provider(webhook_segment(p).unwrap()), Ok(p));
            assert_eq!(ProviderArg(p).to_string(), provider_name(p));
        }
        assert_eq!(webhook_segment(Provider::BetterAuth), Some("better-auth"));
        assert_eq!(provider_name(Provider::BetterAuth), "better_auth");
        assert_eq!(webhook_segment(Provider::Unspecified), None);
    }
}
