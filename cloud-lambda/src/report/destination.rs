//! Where a webhook may go; keeps the guarantee "Webhooks go to public hosts only". An uploader
//! names the callback URL, so without limits the ingest would POST wherever it is told: to the
//! cloud's metadata service, to hosts on the private network, and the recorded outcome would
//! tell the uploader which of them answer. So:
//!
//! - the URL is `https` with a host and no credentials (plain `http` only to a loopback host,
//!   and only with `SLUICE_WEBHOOK_ALLOW_INSECURE=1`, for local use);
//! - an IP literal must be a public address: loopback, private (10/8, 172.16/12, 192.168/16),
//!   link-local (169.254/16, where the metadata service lives; fe80::/10), CGNAT (100.64/10),
//!   unique-local (fc00::/7), unspecified, multicast, broadcast and documentation ranges are
//!   refused, and so are IPv6 forms that embed an IPv4 address of those ranges;
//! - a name is resolved when the POST connects, by [`PublicResolver`], which drops every
//!   address of those ranges, so a name that resolves (or is re-pointed, DNS rebinding) to an
//!   internal address is never connected to;
//! - with `SLUICE_WEBHOOK_ALLOWED_DOMAINS` set, the host must be one of those domains or a name
//!   under one;
//! - redirects are not followed, and a failed connection is recorded only as "no HTTP answer"
//!   (the detail goes to the ingest's own log).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Longest callback URL accepted.
const MAX_CALLBACK_LEN: usize = 2048;

/// The rules a callback URL is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    /// Plain `http` to a loopback host is allowed (`SLUICE_WEBHOOK_ALLOW_INSECURE=1`).
    pub allow_insecure: bool,
    /// `SLUICE_WEBHOOK_ALLOWED_DOMAINS`, lowercased; empty: any public host.
    pub allowed_domains: Vec<String>,
}

impl Destinations {
    /// Checks a `Sluice-Callback` value; returns the URL as it will be used, or why not.
    pub fn check(&self, raw: &str) -> Result<String, String> {
        if raw.len() > MAX_CALLBACK_LEN {
            return Err(format!("longer than {MAX_CALLBACK_LEN} characters"));
        }
        let url = reqwest::Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials (user:password@)".to_owned());
        }
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return Err(format!("{raw:?} has no host"));
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let literal = bare.parse::<IpAddr>().ok();
        let loopback = match literal {
            Some(ip) => ip.is_loopback(),
            // RFC 6761: `localhost` and every name under it are loopback.
            None => {
                let name = bare.trim_end_matches('.').to_ascii_lowercase();
                name == "localhost" || name.ends_with(".localhost")
            }
        };
        match url.scheme() {
            "https" => {}
            "http" if !loopback => {
                return Err(format!(
                    "plain http is allowed only to a loopback host; use https for {host}"
                ))
            }
            "http" if !self.allow_insecure => {
                return Err(
                    "plain http needs SLUICE_WEBHOOK_ALLOW_INSECURE=1 (local use only); use https"
                        .to_owned(),
                )
            }
            "http" => return Ok(url.to_string()),
            other => return Err(format!("scheme {other:?} is not https")),
        }
        if let Some(range) = literal.and_then(internal) {
            return Err(format!(
                "{host} is a {range} address; webhooks go to public hosts only"
            ));
        }
        if literal.is_none() && loopback {
            return Err(format!(
                "{host} is a loopback name; webhooks go to public hosts only"
            ));
        }
        if !self.allowed_domains.is_empty() && !self.allows(bare) {
            return Err(format!(
                "{host} is not under a domain of SLUICE_WEBHOOK_ALLOWED_DOMAINS ({})",
                self.allowed_domains.join(", ")
            ));
        }
        Ok(url.to_string())
    }

    /// Whether `host` is one of the allowed domains or a name under one.
    fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_domains.iter().any(|d| {
            host == *d
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }

    /// The resolver a webhook POST connects through.
    pub fn resolver(&self) -> PublicResolver {
        PublicResolver {
            allow_loopback: self.allow_insecure,
        }
    }
}

/// Parses `SLUICE_WEBHOOK_ALLOWED_DOMAINS`: domain names separated by commas.
pub fn parse_allowed_domains(raw: &str) -> Result<Vec<String>, String> {
    let mut domains = Vec::new();
    for d in raw.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let d = d.trim_end_matches('.').to_ascii_lowercase();
        let valid = !d.is_empty()
            && d.len() <= 253
            && d.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid || d.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "{d:?} is not a domain name (e.g. hooks.example.com)"
            ));
        }
        domains.push(d);
    }
    Ok(domains)
}

/// The name of the range `ip` belongs to when it is not a public unicast address.
pub fn internal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => internal_v6(v6),
    }
}

fn internal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_multicast() || a >= 240 => "multicast or reserved",
        (100, 64..=127, _) => "shared (CGNAT)",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        _ => return None,
    })
}

fn internal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4
    // (2002::/16) forms reach an IPv4 address: judge that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return internal_v4(v4);
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return internal_v4(Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32));
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return internal_v4(Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32));
    }
    if seg[0] == 0x2002 {
        return internal_v4(Ipv4Addr::from(((seg[1] as u32) << 16) | seg[2] as u32));
    }
    Some(match seg[0] {
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_unspecified() => "unspecified",
        s if s & 0xfe00 == 0xfc00 => "unique-local",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        s if s & 0xffc0 == 0xfec0 => "site-local",
        s if s & 0xff00 == 0xff00 => "multicast",
        0x2001 if seg[1] == 0x0db8 => "documentation",
        _ => return None,
    })
}

/// Resolves a webhook's host when the POST connects and keeps only public addresses (loopback
/// too, with `allow_loopback`); a name left with none fails to connect.
#[derive(Debug, Clone, Copy)]
pub struct PublicResolver {
    allow_loopback: bool,
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| internal(a.ip()).is_none() || (allow_loopback && a.ip().is_loopback()))
                .collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves only to internal addresses ({}); webhooks go to public hosts only",
                    found
                        .iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into();
                return Err(refused);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests;
