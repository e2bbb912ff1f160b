//! Which endpoint addresses the router may send traffic to.
//!
//! A registered address is a place the router will connect to on behalf of any client, so it is
//! checked twice against the same policy: when it is registered (its scheme, and its IP when the
//! host is an IP literal) and when a connection is made (every IP a host name resolves to, at
//! connect time, so a name cannot be pointed at a forbidden address later). By default link-local
//! and cloud metadata addresses, multicast, "this network" and the router's own listeners are
//! refused; operators can narrow the allowed networks further.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// Networks refused whatever the configuration says.
pub const ALWAYS_DENIED: [&str; 8] = [
    "0.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "fe80::/10",
    "ff00::/8",
    "fd00:ec2::254/128",
    "::/128",
];

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The address policy of one node.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
    denied: Vec<IpNet>,
    schemes: Vec<String>,
    /// This node's listeners: an endpoint must never be the router itself.
    own: Vec<SocketAddr>,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        Self::new(&[], &[], &["http".into(), "https".into()], Vec::new()).expect("the built-in networks parse")
    }
}

impl AddressPolicy {
    /// `allowed` empty means every network not denied.
    pub fn new(
        allowed: &[String],
        denied: &[String],
        schemes: &[String],
        own: Vec<SocketAddr>,
    ) -> Result<Self, String> {
        let parse = |text: &String| text.parse::<IpNet>().map_err(|_| format!("{text:?} is not a network (CIDR)"));
        let allowed = allowed.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        let mut denied_nets = denied.iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        denied_nets.extend(ALWAYS_DENIED.iter().map(|n| n.parse::<IpNet>().expect("valid built-in network")));
        for scheme in schemes {
            if !matches!(scheme.as_str(), "http" | "https") {
                return Err(format!("scheme {scheme:?} is not supported (http, https)"));
            }
        }
        Ok(Self { allowed, denied: denied_nets, schemes: schemes.to_vec(), own })
    }

    /// Checks one IP and port a connection would go to.
    pub fn check_ip(&self, ip: IpAddr, port: u16) -> Result<(), Refused> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.denied.iter().any(|net| net.contains(&ip)) {
            return Err(Refused(format!("{ip} is in a denied network")));
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|net| net.contains(&ip)) {
            return Err(Refused(format!("{ip} is outside the allowed networks")));
        }
        let is_self = self.own.iter().any(|listener| {
            listener.port() == port
                && (listener.ip() == ip
                    || ((listener.ip().is_unspecified() || listener.ip().is_loopback()) && ip.is_loopback()))
        });
        if is_self {
            return Err(Refused(format!("{ip}:{port} is one of this router's own listeners")));
        }
        Ok(())
    }

    /// Checks a host as it appears in a URI: an IP literal (bracketed for IPv6) is checked, a
    /// name is left to the resolver.
    pub fn check_host(&self, host: &str, port: u16) -> Result<(), Refused> {
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        match literal.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(ip, port),
            Err(_) => Ok(()),
        }
    }

    /// Checks a registered address: its scheme, and its IP when the host is an IP literal.
    pub fn check_url(&self, address: &str) -> Result<(), Refused> {
        let url = url::Url::parse(address).map_err(|e| Refused(format!("not a URL: {e}")))?;
        if !self.schemes.iter().any(|s| s == url.scheme()) {
            return Err(Refused(format!("scheme {} is not allowed here", url.scheme())));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip), port),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip), port),
            // Names are checked when they are resolved, at connect time.
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(Refused("no host".into())),
        }
    }
}

/// A DNS resolver for the data plane's connector that drops addresses the policy refuses.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    pub policy: Arc<AddressPolicy>,
}

impl tower::Service<hyper_util::client::legacy::connect::dns::Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusals = Vec::new();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_ip(addr.ip(), 0) {
                    Ok(()) => true,
                    Err(refused) => {
                        refusals.push(refused.0);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let reason = if refusals.is_empty() { "no address".to_owned() } else { refusals.join("; ") };
                tracing::warn!(host, reason, "endpoint host name resolves only to refused addresses");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves only to refused addresses: {reason}"),
                ));
            }
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_refuse_metadata_link_local_and_self() {
        let own = vec!["0.0.0.0:8080".parse().unwrap(), "10.0.0.1:8081".parse().unwrap()];
        let policy = AddressPolicy::new(&[], &[], &["http".into(), "https".into()], own).unwrap();
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://0.0.0.0:9000/",
            "http://127.0.0.1:8080/",
            "http://10.0.0.1:8081/",
            "http://224.0.0.1/",
        ] {
            assert!(policy.check_url(refused).is_err(), "{refused} was allowed");
        }
        for allowed in
            ["http://10.0.0.5:9000/", "https://svc.internal/", "http://127.0.0.1:9000/", "http://[2001:db8::1]:80/"]
        {
            assert_eq!(policy.check_url(allowed), Ok(()), "{allowed}");
        }
    }

    #[test]
    fn allowed_networks_and_schemes_narrow_it_down() {
        let policy =
            AddressPolicy::new(&["10.0.0.0/8".into()], &["10.9.0.0/16".into()], &["https".into()], vec![]).unwrap();
        assert!(policy.check_url("https://10.1.2.3/").is_ok());
        assert!(policy.check_url("https://10.9.2.3/").unwrap_err().0.contains("denied"));
        assert!(policy.check_url("https://192.168.1.1/").unwrap_err().0.contains("outside"));
        assert!(policy.check_url("http://10.1.2.3/").unwrap_err().0.contains("scheme"));
        assert!(AddressPolicy::new(&["nonsense".into()], &[], &[], vec![]).is_err());
        assert!(AddressPolicy::new(&[], &[], &["ftp".into()], vec![]).is_err());
    }
}
